"""Ready-made queries offered on the SQL page: precompute.core.sql_examples, shared with the static site."""
from precompute.core.sql_examples import EXAMPLES

__all__ = ["EXAMPLES"]
