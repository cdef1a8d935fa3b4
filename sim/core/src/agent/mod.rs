//! PLACEHOLDER (owned by the agent helper).
