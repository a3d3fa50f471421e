-- The contract: a journal's debit lines and its credit lines each sum to its total.
SELECT j._organization AS organization, 'journals/' || j.id AS record,
       'total ' || j.total || ', debits ' || coalesce(sum(l.amount) FILTER (
           l.debit_or_credit = 'debit'), 0) || ', credits ' || coalesce(sum(l.amount) FILTER (
           l.debit_or_credit = 'credit'), 0) AS problem
FROM finance.journals AS j
LEFT JOIN finance.journals__line_items AS l
    ON l._organization = j._organization AND l.parent_id = j.id
WHERE j._deleted_at IS NULL
GROUP BY j._organization, j.id, j.total
HAVING j.total <> coalesce(sum(l.amount) FILTER (l.debit_or_credit = 'debit'), 0)
    OR j.total <> coalesce(sum(l.amount) FILTER (l.debit_or_credit = 'credit'), 0)
