-- Revenue per month (the first day of the document's month) and customer, in base
-- currency: invoiced is Σ (sub_total − discount_total) of invoices, credited Σ sub_total
-- of credit notes by the credit note's date, each document converted and rounded alone.
WITH by_month AS (
    SELECT organization, CAST(date_trunc('month', date) AS DATE) AS month, customer_id,
           min(customer_name) AS customer_name,
           sum(invoiced) AS invoiced, sum(credited) AS credited
    FROM sales()
    GROUP BY ALL
)
SELECT m.organization, m.month, m.customer_id,
       coalesce(c.contact_name, m.customer_name) AS customer_name,
       m.invoiced, m.credited, m.invoiced - m.credited AS net
FROM by_month AS m
LEFT JOIN finance.contacts AS c
    ON c._organization = m.organization AND c.id = m.customer_id AND c._deleted_at IS NULL
