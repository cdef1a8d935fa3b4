//! PLACEHOLDER (owned by the crypto helper): the secret masker and leak scanner.
