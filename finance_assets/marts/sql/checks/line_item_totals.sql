-- The contract: a line's item_total is quantity × rate, rounded to 2 decimals.
WITH lines AS (
    SELECT 'invoices' AS resource, * FROM finance.invoices__line_items
    UNION ALL BY NAME SELECT 'bills' AS resource, * FROM finance.bills__line_items
    UNION ALL BY NAME SELECT 'creditnotes' AS resource, * FROM finance.creditnotes__line_items
    UNION ALL BY NAME SELECT 'estimates' AS resource, * FROM finance.estimates__line_items
    UNION ALL BY NAME SELECT 'sales_orders' AS resource, * FROM finance.sales_orders__line_items
    UNION ALL BY NAME
    SELECT 'purchase_orders' AS resource, * FROM finance.purchase_orders__line_items
)
SELECT _organization AS organization, resource || '/' || parent_id AS record,
       'line ' || line_item_id || ': item_total ' || item_total || ' <> ' ||
       ROUND(CAST(quantity AS DECIMAL(38, 6)) * rate, 2) AS problem
FROM lines
WHERE item_total <> ROUND(CAST(quantity AS DECIMAL(38, 6)) * rate, 2)
