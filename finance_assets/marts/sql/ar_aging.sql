-- Accounts receivable aging, one snapshot per as-of date: per customer, the open invoice
-- balances in base currency by how many days past due they are on as_of.
WITH open_items AS (
    SELECT _organization AS organization, as_of, customer_id, customer_name,
           date_diff('day', due_date, as_of) AS days_past_due, balance_base
    FROM open_invoices()
)
SELECT o.organization, o.as_of, o.customer_id,
       coalesce(any_value(c.contact_name), min(o.customer_name)) AS customer_name,
       coalesce(sum(balance_base) FILTER (days_past_due <= 0), 0) AS "current",
       coalesce(sum(balance_base) FILTER (days_past_due BETWEEN 1 AND 30), 0) AS days_1_30,
       coalesce(sum(balance_base) FILTER (days_past_due BETWEEN 31 AND 60), 0) AS days_31_60,
       coalesce(sum(balance_base) FILTER (days_past_due BETWEEN 61 AND 90), 0) AS days_61_90,
       coalesce(sum(balance_base) FILTER (days_past_due > 90), 0) AS days_over_90,
       sum(balance_base) AS total
FROM open_items AS o
LEFT JOIN finance.contacts AS c
    ON c._organization = o.organization AND c.id = o.customer_id AND c._deleted_at IS NULL
GROUP BY o.organization, o.as_of, o.customer_id
