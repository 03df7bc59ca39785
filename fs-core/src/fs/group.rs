//! The open transaction group: redb's write transaction, with the tables a small-file create,
//! the verbs around it and the mapping of its data at commit touch (`inodes`, `dirents`,
//! `dir_cookies`, `xattrs`, `properties`, `file_blocks`, `blocks`, `heat`, `spans`) held open
//! for the group's whole life. Opening a redb table looks it up by name and checks its types,
//! and closing it stages its new root; done at every record access, that was about half of a
//! metadata verb's CPU time. The tables close when the group is committed or dropped.

use std::cell::{RefCell, RefMut};
use std::panic::Location;

use redb::{Table, TableError, TableHandle, WriteTransaction};

use crate::error::FsResult;
use crate::meta::{
    BLOCKS, DIRENTS, DIR_COOKIES, FILE_BLOCKS, HEAT, INODES, PROPERTIES, SPANS, XATTRS,
};

/// Declares [`HotTables`]: one field per table, opened together, each lent by the method of
/// its name.
macro_rules! hot_tables {
    ($($name:ident: $definition:ident <$key:ty, $value:ty>),* $(,)?) => {
        /// The tables a group keeps open. A table is lent to one user at a time, as redb lends
        /// an opened table: asking for one that is already lent is the error redb gives for
        /// opening a table twice.
        pub(super) struct HotTables<'txn> {
            $($name: RefCell<Table<'txn, $key, $value>>,)*
        }

        impl<'txn> HotTables<'txn> {
            fn open(txn: &'txn WriteTransaction) -> Result<Self, TableError> {
                Ok(Self {
                    $($name: RefCell::new(txn.open_table($definition)?),)*
                })
            }

            $(
                #[doc = concat!("Lends the open `", stringify!($name), "` table.")]
                #[track_caller]
                pub fn $name(&self) -> FsResult<RefMut<'_, Table<'txn, $key, $value>>> {
                    lend(&self.$name, $definition.name())
                }
            )*
        }
    };
}

hot_tables! {
    inodes: INODES<u64, (&'static [u8], u64)>,
    dirents: DIRENTS<(u64, &'static [u8]), (u64, u64, u8, u64)>,
    dir_cookies: DIR_COOKIES<(u64, u64), (&'static [u8], u64)>,
    xattrs: XATTRS<(u64, &'static [u8]), (&'static [u8], u64)>,
    properties: PROPERTIES<(u64, &'static str), &'static str>,
    file_blocks: FILE_BLOCKS<(u64, u64), (u64, u64)>,
    blocks: BLOCKS<u64, &'static [u8]>,
    heat: HEAT<u64, (f64, i64)>,
    spans: SPANS<(u64, u64), (u64, u64)>,
}

#[track_caller]
fn lend<'a, T>(table: &'a RefCell<T>, name: &str) -> FsResult<RefMut<'a, T>> {
    let location = Location::caller();
    table
        .try_borrow_mut()
        .map_err(|_| TableError::TableAlreadyOpen(name.to_owned(), location).into())
}

self_cell::self_cell!(
    /// A write transaction and its open [`HotTables`].
    pub(super) struct Group {
        owner: WriteTransaction,
        #[not_covariant]
        dependent: HotTables,
    }
);

impl Group {
    pub fn begin(txn: WriteTransaction) -> FsResult<Self> {
        Ok(Self::try_new(txn, |txn| HotTables::open(txn))?)
    }

    /// Closes the tables and hands the transaction back (to commit it).
    pub fn close(self) -> WriteTransaction {
        self.into_owner()
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use redb::{backends::InMemoryBackend, Database, ReadableDatabase, ReadableTable};

    use super::*;
    use crate::error::FsError;

    #[test]
    fn a_table_is_lent_once_at_a_time_and_its_changes_reach_the_commit() {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap();
        let group = Group::begin(db.begin_write().unwrap()).unwrap();
        group.with_dependent(|_, tables| {
            let mut inodes = tables.inodes().unwrap();
            inodes.insert(7, (b"seven".as_slice(), 1)).unwrap();
            // A second loan while the first is out is redb's "already open", not a panic.
            let Err(FsError::Meta(err)) = tables.inodes() else {
                panic!("a second loan of a lent table was granted");
            };
            assert!(err.to_string().contains("inodes"), "{err}");
            drop(inodes);
            // Returned, the table is lent again, with the change made through it.
            assert_eq!(
                tables.inodes().unwrap().get(7).unwrap().unwrap().value().0,
                b"seven"
            );
        });
        group.close().commit().unwrap();
        let read = db.begin_read().unwrap();
        let inodes = read.open_table(INODES).unwrap();
        assert_eq!(
            inodes.get(7).unwrap().unwrap().value(),
            (b"seven".as_slice(), 1)
        );
    }
}
