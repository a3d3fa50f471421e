"""Records on their way in: a page's JSON to validated columns, ready for the warehouse.

Two ways of reading a page, one result: ``columnar`` (the whole body at once, in
Arrow, for pages it can vouch for) and ``validation`` (pydantic, record by record,
for the rest: it explains and quarantines what the schema cannot hold). Both end as
``page_columns.PageColumns``; ``json_text`` writes what is kept verbatim.
"""
