"""Where runs live: the queue, metrics, images, checkpoints and workers in one SQL database.

``storage.models`` holds the tables, ``storage.db`` opens a database by URL (and checks its
schema version), ``storage.queries`` reads and writes it, ``storage.arrays`` packs image
snapshots, ``storage.worker`` trains queued runs, ``storage.cli`` holds the queue commands and
``storage.perf`` times the worker against a plain engine run. The engine never imports this
package; the worker drives the engine through its callbacks.
"""
