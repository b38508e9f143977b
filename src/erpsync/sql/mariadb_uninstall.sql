-- erpsync — remove the duplication procedures from a MariaDB database.
--     erpsync procedures uninstall mysql+pymysql://USER@HOST/DB
--     mysql -u USER -p DB < mariadb_uninstall.sql
-- The record of past duplications (erpsync_dup_run, erpsync_dup_map) and the ERP's data are kept.

DROP PROCEDURE IF EXISTS SP_DupliquerProjet;
DROP PROCEDURE IF EXISTS SP_DupliquerVersion;
DROP PROCEDURE IF EXISTS SP_DupliquerClient;
DROP PROCEDURE IF EXISTS SP_DupliquerCommande;
DROP PROCEDURE IF EXISTS SP_DupliquerLignesCommande;
DROP PROCEDURE IF EXISTS SP_GenererNumero;
DROP PROCEDURE IF EXISTS SP_LogOperation;
DROP PROCEDURE IF EXISTS SP_GetEqMapping;
DROP PROCEDURE IF EXISTS erpsync_reserver_numeros;
DROP PROCEDURE IF EXISTS erpsync_debut_duplication;
DROP PROCEDURE IF EXISTS erpsync_verifier_ids;
DROP PROCEDURE IF EXISTS erpsync_copier_versions;
DROP PROCEDURE IF EXISTS erpsync_copier_clients;
DROP PROCEDURE IF EXISTS erpsync_copier_commandes;
DROP PROCEDURE IF EXISTS erpsync_copier_lignes;
DROP PROCEDURE IF EXISTS erpsync_fin_duplication;
DROP PROCEDURE IF EXISTS erpsync_journaliser_echec;
DROP PROCEDURE IF EXISTS erpsync_refuser;
DROP FUNCTION IF EXISTS erpsync_numero;
DROP FUNCTION IF EXISTS erpsync_table_mapping;
