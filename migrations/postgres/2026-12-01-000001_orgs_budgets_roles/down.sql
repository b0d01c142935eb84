ALTER TABLE customers DROP COLUMN budget_id;
ALTER TABLE keys DROP COLUMN allowed_routes;
DROP INDEX teams_organization_id;
ALTER TABLE teams DROP COLUMN model_aliases;
ALTER TABLE teams DROP COLUMN organization_id;
DROP TABLE organization_members;
DROP TABLE organizations;
DROP TABLE budgets;
