//! PLACEHOLDER (owned by the server/codec helper): the one codec between `api` and `wire`.
