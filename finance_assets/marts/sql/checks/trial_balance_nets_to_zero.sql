-- The mart's own integrity: debits equal credits over all accounts.
SELECT organization, 'trial_balance/total' AS record,
       'debits ' || sum(debit) || ' <> credits ' || sum(credit) AS problem
FROM marts.trial_balance
GROUP BY organization
HAVING sum(debit) <> sum(credit)
