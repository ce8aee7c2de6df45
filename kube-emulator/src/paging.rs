//! `limit`/`continue` paging with the real server's guarantee: every page of one list shows
//! the collection at the same resourceVersion, however it changes between pages. The rest of
//! a paged list is kept in memory under a random continue token; `compact()` forgets them all,
//! so a client holding an old token gets 410 Expired and must list again, as with etcd.

use std::collections::HashMap;

use serde_json::Value;

use crate::status::ApiError;

/// One page of a list.
#[derive(Debug)]
pub(crate) struct ListPage {
    /// The objects.
    pub(crate) items: Vec<Value>,
    /// The resourceVersion the whole list shows.
    pub(crate) rv: u64,
    /// Where the next page starts.
    pub(crate) continue_token: Option<String>,
    /// How many items the later pages hold.
    pub(crate) remaining: usize,
}

/// Lists in progress, by continue token.
#[derive(Debug, Default)]
pub(crate) struct Pages {
    rest: HashMap<String, (u64, Vec<Value>)>,
}

impl Pages {
    /// The first page of `items` (taken at `rv`).
    pub(crate) fn first(&mut self, items: Vec<Value>, rv: u64, limit: Option<usize>) -> ListPage {
        self.page(items, rv, limit)
    }

    /// The page after `token`.
    pub(crate) fn resume(
        &mut self,
        token: &str,
        limit: Option<usize>,
    ) -> Result<ListPage, ApiError> {
        let (rv, items) = self.rest.remove(token).ok_or_else(|| {
            ApiError::expired(
                "The provided continue parameter is too old to display a consistent list \
                 result. You can start a new list without the continue parameter."
                    .to_owned(),
            )
        })?;
        Ok(self.page(items, rv, limit))
    }

    /// Forgets every list in progress.
    pub(crate) fn expire_all(&mut self) {
        self.rest.clear();
    }

    fn page(&mut self, mut items: Vec<Value>, rv: u64, limit: Option<usize>) -> ListPage {
        let limit = limit.filter(|l| *l > 0 && *l < items.len());
        let Some(limit) = limit else {
            return ListPage {
                items,
                rv,
                continue_token: None,
                remaining: 0,
            };
        };
        let rest = items.split_off(limit);
        let remaining = rest.len();
        let token: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(24)
            .collect();
        self.rest.insert(token.clone(), (rv, rest));
        ListPage {
            items,
            rv,
            continue_token: Some(token),
            remaining,
        }
    }
}
