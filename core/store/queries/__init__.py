"""The reader's queries, grouped by what they serve; :class:`core.store.Store` combines them."""
