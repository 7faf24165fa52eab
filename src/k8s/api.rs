//! Answers of the API server, read the same way everywhere.

use crate::Result;

/// A delete's or update's 404 is no failure: the object is gone, as wanted.
pub fn ignore_not_found(result: std::result::Result<(), kube::Error>) -> Result<()> {
    match result {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => Ok(other?),
    }
}
