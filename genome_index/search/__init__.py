"""A query against a store: cut in every view (`views`), candidates from FAISS (`candidates`),
re-ranked by k-mer containment (`sketch`) and alignment (`align`) behind one interface
(`rerank`), returned as `Hit`s (`hits`); `Searcher` holds a store's model and indexes for many
queries, and what it keeps of the store between them is `resident`'s."""
