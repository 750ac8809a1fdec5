-- Run once by the postgres image on an empty data directory: one database per service.
CREATE DATABASE bulwark_auth;
CREATE DATABASE bulwark_api;
