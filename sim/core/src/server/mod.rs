//! PLACEHOLDER (owned by the server helper).
