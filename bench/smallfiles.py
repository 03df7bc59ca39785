#!/usr/bin/env python3
"""Small-file helper of the benchmarks: creates N files of SIZE bytes in a new directory DIR
(open O_CREAT|O_EXCL, one write, close), syncs, drops the page cache if DROP is 1, stats them,
unlinks them and removes DIR. Prints "create stat unlink" rates in operations per second.

    bench/smallfiles.py DIR N SIZE DROP
"""
import os, sys, time
d, n, size, drop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
os.mkdir(d)
names = [os.path.join(d, "f%07d" % i) for i in range(n)]
payload = b"x" * size
t0 = time.perf_counter()
for p in names:
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    if size:
        os.write(fd, payload)
    os.close(fd)
t1 = time.perf_counter()
os.sync()
if drop:
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
t2 = time.perf_counter()
for p in names:
    if os.stat(p).st_size != size:
        sys.exit("bad size for " + p)
t3 = time.perf_counter()
for p in names:
    os.unlink(p)
t4 = time.perf_counter()
os.rmdir(d)
print("%.1f %.1f %.1f" % (n / (t1 - t0), n / (t3 - t2), n / (t4 - t3)))
