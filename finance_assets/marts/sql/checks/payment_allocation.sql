-- The contract: unused_amount is the part of a payment's amount applied to no invoice,
-- so amount = Σ amount_applied + unused_amount.
SELECT p._organization AS organization, 'customer_payments/' || p.id AS record,
       'amount ' || p.amount || ' <> Σ amount_applied ' || coalesce(sum(a.amount_applied), 0)
           || ' + unused_amount ' || p.unused_amount AS problem
FROM finance.customer_payments AS p
LEFT JOIN finance.customer_payments__applied_invoices AS a
    ON a._organization = p._organization AND a.parent_id = p.id
WHERE p._deleted_at IS NULL
GROUP BY p._organization, p.id, p.amount, p.unused_amount
HAVING p.amount <> coalesce(sum(a.amount_applied), 0) + p.unused_amount
