-- The contract: an invoice's total is sub_total − discount_total + tax_total.
SELECT _organization AS organization, 'invoices/' || id AS record,
       'total ' || total || ' <> ' || (sub_total - discount_total + tax_total) AS problem
FROM finance.invoices
WHERE _deleted_at IS NULL AND total <> sub_total - discount_total + tax_total
