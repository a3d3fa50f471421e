"""Records on their way in: a page's JSON to validated columns, ready for the warehouse."""
