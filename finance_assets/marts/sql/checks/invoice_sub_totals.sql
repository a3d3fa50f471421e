-- The contract: an invoice's sub_total is the sum of its line item totals.
SELECT i._organization AS organization, 'invoices/' || i.id AS record,
       'sub_total ' || i.sub_total || ' <> Σ item_total ' || coalesce(sum(l.item_total), 0)
           AS problem
FROM finance.invoices AS i
LEFT JOIN finance.invoices__line_items AS l
    ON l._organization = i._organization AND l.parent_id = i.id
WHERE i._deleted_at IS NULL
GROUP BY i._organization, i.id, i.sub_total
HAVING i.sub_total <> coalesce(sum(l.item_total), 0)
