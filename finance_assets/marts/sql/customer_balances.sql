-- What each customer owes by the documents, next to what the contact record says: the
-- reconciliation a controller runs before closing a month. Sums are in the contact's
-- currency; open documents in another currency are counted, not summed, and show as a
-- difference to look into. No as_of: these are the balances now.
WITH open_documents AS (
    SELECT _organization, customer_id, currency_code, balance, 'invoice' AS kind
    FROM finance.invoices
    WHERE _deleted_at IS NULL AND status NOT IN ('draft', 'void') AND balance <> 0
    UNION ALL
    SELECT _organization, customer_id, currency_code, balance, 'creditnote'
    FROM finance.creditnotes
    WHERE _deleted_at IS NULL AND status NOT IN ('draft', 'void') AND balance <> 0
), sums AS (
    SELECT c._organization AS organization, c.id AS customer_id,
           coalesce(sum(d.balance) FILTER (d.kind = 'invoice'
                    AND d.currency_code = c.currency_code), 0) AS open_invoice_balance,
           coalesce(sum(d.balance) FILTER (d.kind = 'creditnote'
                    AND d.currency_code = c.currency_code), 0) AS open_credit_balance,
           count(d.balance) FILTER (d.currency_code <> c.currency_code)
               AS other_currency_documents
    FROM finance.contacts AS c
    LEFT JOIN open_documents AS d
        ON d._organization = c._organization AND d.customer_id = c.id
    WHERE c._deleted_at IS NULL AND c.contact_type = 'customer'
    GROUP BY c._organization, c.id
)
SELECT s.organization, s.customer_id, c.contact_name AS customer_name, c.currency_code,
       s.open_invoice_balance, c.outstanding_receivable_amount,
       c.outstanding_receivable_amount - s.open_invoice_balance AS receivable_difference,
       s.open_credit_balance, c.unused_credits_receivable_amount,
       c.unused_credits_receivable_amount - s.open_credit_balance AS credits_difference,
       s.other_currency_documents
FROM sums AS s
JOIN finance.contacts AS c ON c._organization = s.organization AND c.id = s.customer_id
