//! A sans-IO CPM client.
