-- Contacts whose outstanding amounts differ from their open documents (or who have open
-- documents in another currency): a real API's contact totals may lag, so this warns.
SELECT organization, 'contacts/' || customer_id AS record,
       'receivable ' || outstanding_receivable_amount || ' vs open invoices '
           || open_invoice_balance || ', credits ' || unused_credits_receivable_amount
           || ' vs open credit notes ' || open_credit_balance
           || CASE WHEN other_currency_documents > 0
                   THEN ', ' || other_currency_documents || ' open documents in another currency'
                   ELSE '' END AS problem
FROM marts.customer_balances
WHERE receivable_difference <> 0 OR credits_difference <> 0 OR other_currency_documents > 0
