"""5_advanced/custom_context_table.py -- the "large module" of custom_context.py

Importing it builds a table (MPP_TABLE_MIB MiB, 16 by default) and notes
which process built it.  A worker that finds BUILT_BY != its own pid got the
table from whoever forked it.
"""
import os

TABLE = bytes(int(os.environ.get("MPP_TABLE_MIB", "16")) << 20)
TABLE = TABLE.replace(b"\0", b"\1")  # a second pass, writing every page
BUILT_BY = os.getpid()
