"""Versioned schema migrations, applied in order by ``storage.migrate``.

Each migration is a module ``mNNNN_<what>.py`` with a function ``upgrade(conn)``. Migrations
declare the DDL they apply (frozen at the time they were written) rather than importing the
current table declarations, so replaying them on an old database always yields the same schema.
"""
