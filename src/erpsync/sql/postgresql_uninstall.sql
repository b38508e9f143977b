-- erpsync — remove the duplication procedures from a PostgreSQL database.
--     erpsync procedures uninstall postgresql+psycopg://USER@HOST/DB
--     psql --single-transaction -f postgresql_uninstall.sql DB
-- The record of past duplications (erpsync_dup_run, erpsync_dup_map) and the ERP's data are kept.

DO $$
DECLARE
    r RECORD;
BEGIN
    FOR r IN
        SELECT p.oid::REGPROCEDURE AS routine, p.prokind
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = current_schema()
          AND p.proname IN ('sp_dupliquerprojet', 'sp_dupliquerversion', 'sp_dupliquerclient',
                            'sp_dupliquercommande', 'sp_dupliquerlignescommande', 'sp_generernumero',
                            'sp_logoperation', 'sp_geteqmapping', 'erpsync_reserver_numeros',
                            'erpsync_debut_duplication', 'erpsync_copier_versions', 'erpsync_copier_clients',
                            'erpsync_copier_commandes', 'erpsync_copier_lignes', 'erpsync_fin_duplication',
                            'erpsync_journaliser_echec', 'erpsync_numero', 'erpsync_table_mapping')
    LOOP
        EXECUTE format('DROP %s %s', CASE r.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, r.routine);
    END LOOP;
END
$$;
