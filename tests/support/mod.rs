//! Shared support of the identity integration tests.
#![allow(dead_code)]

pub mod mock_idp;
