-- The contract: an invoice's payment_terms are the days between date and due_date
-- (aging counts days past due_date).
SELECT _organization AS organization, 'invoices/' || id AS record,
       'payment_terms ' || payment_terms || ' <> ' || date_diff('day', date, due_date)
           || ' days from date to due_date' AS problem
FROM finance.invoices
WHERE _deleted_at IS NULL AND date_diff('day', date, due_date) <> payment_terms
