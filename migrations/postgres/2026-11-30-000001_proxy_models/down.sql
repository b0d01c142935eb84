DROP TABLE proxy_models;
