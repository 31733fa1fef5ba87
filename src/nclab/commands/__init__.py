"""The work of each ``nclab`` subcommand whose glue is more than a call: load the input, call the
library, print the table (formatted by :mod:`nclab.report.tables`), write the JSON. The parsers
live in :mod:`nclab.cli`."""
