-- The contract: a bank transaction's amount is always positive; debit_or_credit says
-- which way it moves.
SELECT _organization AS organization, 'transactions/' || id AS record,
       'amount ' || amount || ' is not positive' AS problem
FROM finance.transactions
WHERE _deleted_at IS NULL AND amount <= 0
