ALTER TABLE keys RESET (fillfactor);
ALTER TABLE users RESET (fillfactor);
ALTER TABLE teams RESET (fillfactor);
ALTER TABLE customers RESET (fillfactor);
ALTER TABLE organizations RESET (fillfactor);
ALTER TABLE key_model_spend RESET (fillfactor);
