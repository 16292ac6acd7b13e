//! The CPM Conversation Server (sans-IO).
