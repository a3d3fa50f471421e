-- What the contract implies: every reference names a record that exists (and is not
-- soft-deleted). A real API may break it, so this warns.
WITH contacts AS (SELECT _organization, id FROM finance.contacts WHERE _deleted_at IS NULL),
items AS (SELECT _organization, id FROM finance.items WHERE _deleted_at IS NULL),
taxes AS (SELECT _organization, id FROM finance.taxes WHERE _deleted_at IS NULL),
invoices AS (SELECT _organization, id FROM finance.invoices WHERE _deleted_at IS NULL),
accounts AS (SELECT _organization, id FROM finance.banking WHERE _deleted_at IS NULL),
refs AS (
    SELECT _organization, 'invoices/' || id AS record, 'customer' AS what,
           customer_id AS ref, 'contacts' AS target
        FROM finance.invoices WHERE _deleted_at IS NULL
    UNION ALL SELECT _organization, 'creditnotes/' || id, 'customer', customer_id, 'contacts'
        FROM finance.creditnotes WHERE _deleted_at IS NULL
    UNION ALL SELECT _organization, 'bills/' || id, 'vendor', vendor_id, 'contacts'
        FROM finance.bills WHERE _deleted_at IS NULL
    UNION ALL SELECT l._organization, 'invoices/' || p.id, 'item', l.item_id, 'items'
        FROM finance.invoices__line_items AS l JOIN finance.invoices AS p
        ON p._organization = l._organization AND p.id = l.parent_id
        WHERE p._deleted_at IS NULL AND l.item_id IS NOT NULL
    UNION ALL SELECT l._organization, 'invoices/' || p.id, 'tax', l.tax_id, 'taxes'
        FROM finance.invoices__line_items AS l JOIN finance.invoices AS p
        ON p._organization = l._organization AND p.id = l.parent_id
        WHERE p._deleted_at IS NULL AND l.tax_id IS NOT NULL
    UNION ALL SELECT l._organization, 'bills/' || p.id, 'item', l.item_id, 'items'
        FROM finance.bills__line_items AS l JOIN finance.bills AS p
        ON p._organization = l._organization AND p.id = l.parent_id
        WHERE p._deleted_at IS NULL AND l.item_id IS NOT NULL
    UNION ALL SELECT l._organization, 'bills/' || p.id, 'tax', l.tax_id, 'taxes'
        FROM finance.bills__line_items AS l JOIN finance.bills AS p
        ON p._organization = l._organization AND p.id = l.parent_id
        WHERE p._deleted_at IS NULL AND l.tax_id IS NOT NULL
    UNION ALL SELECT l._organization, 'creditnotes/' || p.id, 'item', l.item_id, 'items'
        FROM finance.creditnotes__line_items AS l JOIN finance.creditnotes AS p
        ON p._organization = l._organization AND p.id = l.parent_id
        WHERE p._deleted_at IS NULL AND l.item_id IS NOT NULL
    UNION ALL SELECT l._organization, 'creditnotes/' || p.id, 'tax', l.tax_id, 'taxes'
        FROM finance.creditnotes__line_items AS l JOIN finance.creditnotes AS p
        ON p._organization = l._organization AND p.id = l.parent_id
        WHERE p._deleted_at IS NULL AND l.tax_id IS NOT NULL
    UNION ALL SELECT a._organization, 'customer_payments/' || p.id, 'applied invoice',
           a.invoice_id, 'invoices'
        FROM finance.customer_payments__applied_invoices AS a
        JOIN finance.customer_payments AS p
        ON p._organization = a._organization AND p.id = a.parent_id
        WHERE p._deleted_at IS NULL
    UNION ALL SELECT _organization, 'transactions/' || id, 'account', account_id, 'banking'
        FROM finance.transactions WHERE _deleted_at IS NULL
)
SELECT r._organization AS organization, r.record,
       r.what || ' ' || r.ref || ' is not in ' || r.target AS problem
FROM refs AS r
WHERE NOT EXISTS (
    SELECT 1 FROM (
        SELECT _organization, id, 'contacts' AS target FROM contacts
        UNION ALL SELECT _organization, id, 'items' FROM items
        UNION ALL SELECT _organization, id, 'taxes' FROM taxes
        UNION ALL SELECT _organization, id, 'invoices' FROM invoices
        UNION ALL SELECT _organization, id, 'banking' FROM accounts
    ) AS t
    WHERE t._organization = r._organization AND t.id = r.ref AND t.target = r.target
)
