-- =============================================================================================
-- erpsync — the duplication procedures of the specification, for PostgreSQL 14 and later
-- =============================================================================================
--
-- Install (or replace) in one transaction with either of:
--     erpsync procedures install postgresql+psycopg://USER@HOST/DB
--     psql --single-transaction -f postgresql_procedures.sql DB
-- Remove with `erpsync procedures uninstall DB` (or postgresql_uninstall.sql).
--
-- Names are unquoted, so PostgreSQL stores them in lower case and the specification's spelling
-- works as written. OUT parameters are INOUT with a NULL default: psql shows them as the result
-- row, and a PL/pgSQL caller passes variables.
--     CALL SP_DupliquerProjet(p_IdSource, p_Utilisateur);               -- → p_idnouveau, p_erreur
--     CALL SP_DupliquerVersion(p_IdSource, p_IdProjetCible, p_Utilisateur);
--     CALL SP_DupliquerClient(p_IdSource, p_IdVersionCible, p_Utilisateur);
--     CALL SP_DupliquerCommande(p_IdSource, p_IdClientCible, p_Utilisateur);
--     CALL SP_DupliquerLignesCommande(p_IdCommandeSource, p_IdCommandeCible, p_Utilisateur);
--     CALL SP_GenererNumero('PROJET', p_InTransaction);                  -- → p_numero
--     CALL SP_LogOperation(p_Operation, p_TableCible, p_IdSource, p_IdNouveau, p_Message, p_Succes, p_Utilisateur);
--     CALL SP_GetEqMapping('EqClient', p_IdPrev);                        -- → p_idnext, p_succes
-- A NULL target (p_Id…Cible) keeps the copy under the same parent as the original.
--
-- Same behaviour as the MariaDB procedures (set-based copy, mapping tables EqVersion, EqClient,
-- EqCommande kept for the session and saved in erpsync_dup_map, journal in tb_Logs, numbers
-- from tb_Numerotation), with one difference imposed by PostgreSQL: a procedure cannot commit
-- inside its caller's transaction, and an error aborts the whole transaction, so a failure row
-- could never survive a re-raised error. A failure therefore does not raise: the work of the
-- duplication is undone (its body is a subtransaction: BEGIN … EXCEPTION), the failure is
-- journaled, p_erreur = 1 and the error is reported as a WARNING. The failure row is kept when
-- the transaction commits — at once under autocommit, as in psql. A caller that wants its own
-- transaction aborted checks p_erreur:  IF v_erreur = 1 THEN RAISE EXCEPTION '…'; END IF;
--
-- New ids are drawn from each table's own sequence (nextval) into the mapping table, then the
-- copies are inserted with those ids: old and new ids are paired explicitly, never by the order
-- of RETURNING rows. The mapping tables are ANALYZEd before they are joined.
-- =============================================================================================


-- erpsync's record of every duplication (shared with `erpsync duplicate`).
CREATE TABLE IF NOT EXISTS erpsync_dup_run (
    run_id       SERIAL PRIMARY KEY,
    level        VARCHAR(20) NOT NULL,
    source_table VARCHAR(64) NOT NULL,
    source_id    INTEGER NOT NULL,
    new_id       INTEGER NULL,
    deep         SMALLINT NOT NULL,
    user_login   VARCHAR(50) NULL,
    started_at   TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    status       VARCHAR(20) NOT NULL
);

CREATE TABLE IF NOT EXISTS erpsync_dup_map (
    run_id     INTEGER NOT NULL,
    table_name VARCHAR(64) NOT NULL,
    old_id     INTEGER NOT NULL,
    new_id     INTEGER NOT NULL,
    PRIMARY KEY (run_id, table_name, old_id)
);
CREATE INDEX IF NOT EXISTS ix_erpsync_dup_map_new ON erpsync_dup_map (run_id, table_name, new_id);

-- The steps `erpsync duplicate undo` checks before deleting a run's copies. Runs made by these
-- procedures record none (undo then says so); the table is created so that erpsync can read
-- the runs and maps they record.
CREATE TABLE IF NOT EXISTS erpsync_dup_step (
    run_id        INTEGER NOT NULL,
    step_no       INTEGER NOT NULL,
    table_name    VARCHAR(64) NOT NULL,
    parent_table  VARCHAR(64) NULL,
    parent_column VARCHAR(64) NULL,
    mapped        SMALLINT NOT NULL,
    row_count     INTEGER NOT NULL,
    fingerprint   VARCHAR(4000) NOT NULL,
    PRIMARY KEY (run_id, step_no)
);


-- Earlier versions of these routines (every signature) are dropped first: CREATE OR REPLACE
-- cannot change a parameter list (it would add an overload instead). psql reads the file
-- beside this one; erpsync puts its text here.
\ir postgresql_uninstall.sql


-- ---------------------------------------------------------------------------------------------
-- Utilities
-- ---------------------------------------------------------------------------------------------

-- The journal: one row of tb_Logs, in the current transaction.
CREATE PROCEDURE SP_LogOperation(
    p_Operation   VARCHAR,
    p_TableCible  VARCHAR,
    p_IdSource    INTEGER,
    p_IdNouveau   INTEGER,
    p_Message     VARCHAR,
    p_Succes      INTEGER,
    p_Utilisateur VARCHAR)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tb_Logs (DateLog, Operation, TableCible, IdSource, IdNouveau, Message, Succes, Utilisateur)
    VALUES (LOCALTIMESTAMP(0), p_Operation, p_TableCible, p_IdSource, p_IdNouveau, LEFT(p_Message, 1000),
            CASE WHEN p_Succes <> 0 THEN 1 ELSE 0 END, p_Utilisateur);
END
$$;
COMMENT ON PROCEDURE SP_LogOperation IS 'erpsync: append one row to the journal tb_Logs';


-- The business number of counter value p_N: PRJ-2026-00042, CLI-00042, CMD-2026-00042
-- (at least five digits, never truncated).
CREATE FUNCTION erpsync_numero(p_TypeNumero VARCHAR, p_Annee INTEGER, p_N BIGINT)
RETURNS VARCHAR
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_TypeNumero
               WHEN 'PROJET'   THEN 'PRJ-' || p_Annee || '-'
               WHEN 'CLIENT'   THEN 'CLI-'
               WHEN 'COMMANDE' THEN 'CMD-' || p_Annee || '-'
           END
           || LPAD(p_N::TEXT, GREATEST(5, LENGTH(p_N::TEXT)), '0')
$$;


-- Draw p_Nombre consecutive numbers of one type from tb_Numerotation, in the current
-- transaction: the counter row stays locked until it ends. The series of PROJET and COMMANDE
-- restart each year; CLIENT has one series (Annee = 0).
CREATE PROCEDURE erpsync_reserver_numeros(
    p_TypeNumero  VARCHAR,
    p_Nombre      INTEGER,
    INOUT p_Annee   INTEGER DEFAULT NULL,
    INOUT p_Premier INTEGER DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    IF p_TypeNumero IS NULL OR p_TypeNumero NOT IN ('PROJET', 'CLIENT', 'COMMANDE') THEN
        RAISE EXCEPTION 'unknown number type %: use PROJET, CLIENT or COMMANDE',
            COALESCE(quote_literal(p_TypeNumero), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    p_Annee := CASE WHEN p_TypeNumero = 'CLIENT' THEN 0 ELSE EXTRACT(YEAR FROM CURRENT_DATE)::INTEGER END;
    INSERT INTO tb_Numerotation AS n (TypeNumero, Annee, DernierNumero)
    VALUES (p_TypeNumero, p_Annee, p_Nombre)
    ON CONFLICT (TypeNumero, Annee) DO UPDATE SET DernierNumero = n.DernierNumero + EXCLUDED.DernierNumero
    RETURNING n.DernierNumero - p_Nombre + 1 INTO p_Premier;
END
$$;


-- One new business number, drawn in the current transaction. p_InTransaction is accepted for
-- compatibility: a CALL outside a transaction block is its own transaction, committed when it
-- returns (the specification's 0); inside a transaction block the number is given back if that
-- transaction rolls back (the specification's 1).
CREATE PROCEDURE SP_GenererNumero(
    p_TypeNumero    VARCHAR,
    p_InTransaction INTEGER,
    INOUT p_Numero  VARCHAR DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_annee   INTEGER;
    v_premier INTEGER;
BEGIN
    CALL erpsync_reserver_numeros(p_TypeNumero, 1, v_annee, v_premier);
    p_Numero := erpsync_numero(p_TypeNumero, v_annee, v_premier);
END
$$;
COMMENT ON PROCEDURE SP_GenererNumero IS 'erpsync: draw a new NumProjet, client Code or NumCommande';


-- The table an id map is about: EqClient, tb_Client or client all mean tb_Client.
CREATE FUNCTION erpsync_table_mapping(p_Nom VARCHAR)
RETURNS VARCHAR
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE LOWER(p_Nom)
               WHEN 'eqprojet'    THEN 'tb_Projet'
               WHEN 'tb_projet'   THEN 'tb_Projet'
               WHEN 'projet'      THEN 'tb_Projet'
               WHEN 'eqversion'   THEN 'tb_Version'
               WHEN 'tb_version'  THEN 'tb_Version'
               WHEN 'version'     THEN 'tb_Version'
               WHEN 'eqclient'    THEN 'tb_Client'
               WHEN 'tb_client'   THEN 'tb_Client'
               WHEN 'client'      THEN 'tb_Client'
               WHEN 'eqcommande'  THEN 'tb_Commande'
               WHEN 'tb_commande' THEN 'tb_Commande'
               WHEN 'commande'    THEN 'tb_Commande'
           END
$$;


-- The new id given to row p_IdPrev by the latest duplication made in this session, else by the
-- latest duplication (not undone) that copied it — whether made by these procedures or by
-- `erpsync duplicate`. p_Succes = 1 if found, else 0 and p_IdNext is NULL.
CREATE PROCEDURE SP_GetEqMapping(
    p_TableMapping VARCHAR,
    p_IdPrev       INTEGER,
    INOUT p_IdNext INTEGER DEFAULT NULL,
    INOUT p_Succes INTEGER DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_table VARCHAR := erpsync_table_mapping(p_TableMapping);
    v_run   INTEGER := NULLIF(current_setting('erpsync.run_id', true), '')::INTEGER;
BEGIN
    IF v_table IS NULL THEN
        RAISE EXCEPTION 'unknown mapping table %: use EqProjet, EqVersion, EqClient or EqCommande',
            COALESCE(quote_literal(p_TableMapping), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- This session's latest run first (a primary-key lookup) …
    SELECT m.new_id INTO p_IdNext
    FROM erpsync_dup_map m
    JOIN erpsync_dup_run r ON r.run_id = m.run_id AND r.status = 'done'
    WHERE m.run_id = v_run AND m.table_name = v_table AND m.old_id = p_IdPrev;
    -- … else the newest run that copied the row (runs newest first, a primary-key probe each).
    IF p_IdNext IS NULL THEN
        SELECT m.new_id INTO p_IdNext
        FROM erpsync_dup_run r
        JOIN erpsync_dup_map m ON m.run_id = r.run_id AND m.table_name = v_table AND m.old_id = p_IdPrev
        WHERE r.status = 'done'
        ORDER BY r.run_id DESC
        LIMIT 1;
    END IF;
    p_Succes := CASE WHEN p_IdNext IS NULL THEN 0 ELSE 1 END;
END
$$;
COMMENT ON PROCEDURE SP_GetEqMapping IS
    'erpsync: old id -> new id of a duplication (EqVersion, EqClient, EqCommande, EqProjet)';


-- ---------------------------------------------------------------------------------------------
-- The steps of a duplication (internal: called by the SP_Dupliquer* procedures, in their
-- transaction). A step copies every row listed in its mapping table, saves the id pairs, and
-- lists the children of those rows in the next mapping table.
-- ---------------------------------------------------------------------------------------------

-- A new run in erpsync_dup_run, and empty mapping tables for it.
CREATE PROCEDURE erpsync_debut_duplication(
    p_Niveau      VARCHAR,
    p_TableSource VARCHAR,
    p_IdSource    INTEGER,
    p_Utilisateur VARCHAR,
    INOUT p_Run   INTEGER DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO erpsync_dup_run (level, source_table, source_id, new_id, deep, user_login, started_at, status)
    VALUES (p_Niveau, p_TableSource, p_IdSource, NULL, 1, p_Utilisateur, LOCALTIMESTAMP(0), 'done')
    RETURNING run_id INTO p_Run;

    -- id: rank of the row in its level (1, 2, …, in the order of the source ids); idPrev: the
    -- original; idNext: its copy; idParent: the parent the copy goes under.
    IF to_regclass('pg_temp.eqversion') IS NULL THEN
        CREATE TEMPORARY TABLE EqVersion (
            id INTEGER PRIMARY KEY, idPrev INTEGER NOT NULL UNIQUE, idNext INTEGER, idParent INTEGER NOT NULL);
        CREATE TEMPORARY TABLE EqClient (
            id INTEGER PRIMARY KEY, idPrev INTEGER NOT NULL UNIQUE, idNext INTEGER, idParent INTEGER NOT NULL);
        CREATE TEMPORARY TABLE EqCommande (
            id INTEGER PRIMARY KEY, idPrev INTEGER NOT NULL UNIQUE, idNext INTEGER, idParent INTEGER NOT NULL);
    ELSE
        TRUNCATE EqVersion, EqClient, EqCommande;
    END IF;
END
$$;


-- Versions listed in EqVersion → copies under idParent; their clients → EqClient.
CREATE PROCEDURE erpsync_copier_versions(p_Run INTEGER)
LANGUAGE plpgsql AS $$
DECLARE
    v_sequence REGCLASS := pg_get_serial_sequence('tb_version', 'id');
BEGIN
    UPDATE EqVersion SET idNext = nextval(v_sequence);
    INSERT INTO tb_Version (id, fkProjet, NumVersion, Libelle, DateCreation)
    SELECT e.idNext, e.idParent, v.NumVersion, v.Libelle, v.DateCreation
    FROM EqVersion e
    JOIN tb_Version v ON v.id = e.idPrev;

    INSERT INTO erpsync_dup_map (run_id, table_name, old_id, new_id)
    SELECT p_Run, 'tb_Version', idPrev, idNext FROM EqVersion;

    INSERT INTO EqClient (id, idPrev, idParent)
    SELECT ROW_NUMBER() OVER (ORDER BY c.id), c.id, e.idNext
    FROM tb_Client c
    JOIN EqVersion e ON c.fkVersion = e.idPrev;
    ANALYZE EqClient;
END
$$;


-- Clients listed in EqClient → copies with new codes; their commandes → EqCommande.
CREATE PROCEDURE erpsync_copier_clients(p_Run INTEGER)
LANGUAGE plpgsql AS $$
DECLARE
    v_sequence REGCLASS := pg_get_serial_sequence('tb_client', 'id');
    v_n        INTEGER;
    v_annee    INTEGER;
    v_numero   INTEGER;
BEGIN
    SELECT COUNT(*) INTO v_n FROM EqClient;
    IF v_n = 0 THEN
        RETURN;
    END IF;
    -- codes v_numero … v_numero + v_n - 1, given in the order of the source ids
    CALL erpsync_reserver_numeros('CLIENT', v_n, v_annee, v_numero);
    UPDATE EqClient SET idNext = nextval(v_sequence);
    INSERT INTO tb_Client (id, fkVersion, Code, RaisonSociale, Email, Telephone)
    SELECT e.idNext, e.idParent, erpsync_numero('CLIENT', v_annee, v_numero + e.id - 1),
           c.RaisonSociale, c.Email, c.Telephone
    FROM EqClient e
    JOIN tb_Client c ON c.id = e.idPrev;

    INSERT INTO erpsync_dup_map (run_id, table_name, old_id, new_id)
    SELECT p_Run, 'tb_Client', idPrev, idNext FROM EqClient;

    INSERT INTO EqCommande (id, idPrev, idParent)
    SELECT ROW_NUMBER() OVER (ORDER BY c.id), c.id, e.idNext
    FROM tb_Commande c
    JOIN EqClient e ON c.fkClient = e.idPrev;
    ANALYZE EqCommande;
END
$$;


-- Commandes listed in EqCommande → copies with new numbers (MontantHT is copied as is).
CREATE PROCEDURE erpsync_copier_commandes(p_Run INTEGER)
LANGUAGE plpgsql AS $$
DECLARE
    v_sequence REGCLASS := pg_get_serial_sequence('tb_commande', 'id');
    v_n        INTEGER;
    v_annee    INTEGER;
    v_numero   INTEGER;
BEGIN
    SELECT COUNT(*) INTO v_n FROM EqCommande;
    IF v_n = 0 THEN
        RETURN;
    END IF;
    CALL erpsync_reserver_numeros('COMMANDE', v_n, v_annee, v_numero);
    UPDATE EqCommande SET idNext = nextval(v_sequence);
    INSERT INTO tb_Commande (id, fkClient, NumCommande, DateCommande, Statut, MontantHT)
    SELECT e.idNext, e.idParent, erpsync_numero('COMMANDE', v_annee, v_numero + e.id - 1),
           c.DateCommande, c.Statut, c.MontantHT
    FROM EqCommande e
    JOIN tb_Commande c ON c.id = e.idPrev;

    INSERT INTO erpsync_dup_map (run_id, table_name, old_id, new_id)
    SELECT p_Run, 'tb_Commande', idPrev, idNext FROM EqCommande;
    ANALYZE EqCommande;
END
$$;


-- The lines of every commande in EqCommande → under its copy idNext. Lines have no children,
-- so no mapping is kept: the sequence numbers them, and they are found through EqCommande.
CREATE PROCEDURE erpsync_copier_lignes(INOUT p_Lignes INTEGER DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tb_LigneCommande (fkCommande, NumLigne, Reference, Designation, Quantite, PrixUnitaire)
    SELECT e.idNext, l.NumLigne, l.Reference, l.Designation, l.Quantite, l.PrixUnitaire
    FROM EqCommande e
    JOIN tb_LigneCommande l ON l.fkCommande = e.idPrev;
    GET DIAGNOSTICS p_Lignes = ROW_COUNT;
END
$$;


-- Record the new root id, journal the success, and remember the run for SP_GetEqMapping.
CREATE PROCEDURE erpsync_fin_duplication(
    p_Run         INTEGER,
    p_IdNouveau   INTEGER,
    p_Operation   VARCHAR,
    p_TableCible  VARCHAR,
    p_IdSource    INTEGER,
    p_Lignes      INTEGER,
    p_Tables      INTEGER,
    p_Utilisateur VARCHAR)
LANGUAGE plpgsql AS $$
DECLARE
    v_lignes BIGINT;
BEGIN
    UPDATE erpsync_dup_run SET new_id = p_IdNouveau WHERE run_id = p_Run;
    SELECT COUNT(*) + p_Lignes INTO v_lignes FROM erpsync_dup_map WHERE run_id = p_Run;
    CALL SP_LogOperation(p_Operation, p_TableCible, p_IdSource, p_IdNouveau,
                         format('OK: run %s, %s rows in %s tables', p_Run, v_lignes, p_Tables),
                         1, p_Utilisateur);
    PERFORM set_config('erpsync.run_id', p_Run::TEXT, false);
END
$$;


-- After the subtransaction of a duplication was rolled back: journal the failure (in the
-- transaction of the CALL, so it is kept when that commits) and report it as a WARNING.
CREATE PROCEDURE erpsync_journaliser_echec(
    p_Procedure   VARCHAR,
    p_Operation   VARCHAR,
    p_TableCible  VARCHAR,
    p_IdSource    INTEGER,
    p_SqlState    VARCHAR,
    p_Message     VARCHAR,
    p_Utilisateur VARCHAR)
LANGUAGE plpgsql AS $$
BEGIN
    CALL SP_LogOperation(p_Operation, p_TableCible, p_IdSource, -1,
                         format('Error %s: %s', p_SqlState, p_Message), 0, p_Utilisateur);
    RAISE WARNING '%: % (SQLSTATE %); nothing was copied, p_erreur = 1', p_Procedure, p_Message, p_SqlState;
END
$$;


-- ---------------------------------------------------------------------------------------------
-- The duplications. Each one:
--   1. validates its parameters: a NULL, < 1 or unknown id sets p_Erreur = 1, leaves a warning
--      and writes nothing (RETURN, PL/pgSQL's clean exit);
--   2. copies its level and every level below, set-based, inside BEGIN … EXCEPTION (a
--      subtransaction of the CALL's transaction);
--   3. journals the success; on any error: the subtransaction is rolled back, p_Erreur = 1,
--      the failure is journaled and reported as a WARNING (see the header).
-- ---------------------------------------------------------------------------------------------

CREATE PROCEDURE SP_DupliquerProjet(
    p_IdSource        INTEGER,
    p_Utilisateur     VARCHAR,
    INOUT p_IdNouveau INTEGER DEFAULT NULL,
    INOUT p_Erreur    INTEGER DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_run      INTEGER;
    v_numero   VARCHAR;
    v_lignes   INTEGER;
    v_sqlstate TEXT;
    v_message  TEXT;
BEGIN
    p_Erreur := 0;
    p_IdNouveau := NULL;
    IF p_IdSource IS NULL OR p_IdSource < 1 OR NOT EXISTS (SELECT 1 FROM tb_Projet WHERE id = p_IdSource) THEN
        p_Erreur := 1;
        RAISE WARNING 'SP_DupliquerProjet: p_IdSource = % is not the id of a tb_Projet row; nothing was copied',
            COALESCE(p_IdSource::TEXT, 'NULL');
        RETURN;
    END IF;

    BEGIN
        CALL erpsync_debut_duplication('projet', 'tb_Projet', p_IdSource, p_Utilisateur, v_run);

        CALL SP_GenererNumero('PROJET', 1, v_numero);
        INSERT INTO tb_Projet (NumProjet, Libelle, fkCreateur, DateCreation)
        SELECT v_numero, p.Libelle, p.fkCreateur, p.DateCreation FROM tb_Projet p WHERE p.id = p_IdSource
        RETURNING id INTO p_IdNouveau;
        INSERT INTO erpsync_dup_map (run_id, table_name, old_id, new_id)
        VALUES (v_run, 'tb_Projet', p_IdSource, p_IdNouveau);

        INSERT INTO EqVersion (id, idPrev, idParent)
        SELECT ROW_NUMBER() OVER (ORDER BY v.id), v.id, p_IdNouveau
        FROM tb_Version v
        WHERE v.fkProjet = p_IdSource;
        CALL erpsync_copier_versions(v_run);
        CALL erpsync_copier_clients(v_run);
        CALL erpsync_copier_commandes(v_run);
        CALL erpsync_copier_lignes(v_lignes);

        CALL erpsync_fin_duplication(v_run, p_IdNouveau, 'DUPLICATION_PROJET', 'tb_Projet', p_IdSource,
                                     v_lignes, 5, p_Utilisateur);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
        p_Erreur := 1;
        p_IdNouveau := NULL;
        CALL erpsync_journaliser_echec('SP_DupliquerProjet', 'DUPLICATION_PROJET', 'tb_Projet', p_IdSource,
                                       v_sqlstate, v_message, p_Utilisateur);
    END;
END
$$;
COMMENT ON PROCEDURE SP_DupliquerProjet IS
    'erpsync: deep copy of a projet with its versions, clients, commandes and lines';


CREATE PROCEDURE SP_DupliquerVersion(
    p_IdSource        INTEGER,
    p_IdProjetCible   INTEGER,
    p_Utilisateur     VARCHAR,
    INOUT p_IdNouveau INTEGER DEFAULT NULL,
    INOUT p_Erreur    INTEGER DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_run      INTEGER;
    v_parent   INTEGER;
    v_lignes   INTEGER;
    v_sqlstate TEXT;
    v_message  TEXT;
BEGIN
    p_Erreur := 0;
    p_IdNouveau := NULL;
    IF p_IdSource IS NULL OR p_IdSource < 1 OR NOT EXISTS (SELECT 1 FROM tb_Version WHERE id = p_IdSource) THEN
        p_Erreur := 1;
        RAISE WARNING 'SP_DupliquerVersion: p_IdSource = % is not the id of a tb_Version row; nothing was copied',
            COALESCE(p_IdSource::TEXT, 'NULL');
        RETURN;
    END IF;
    IF p_IdProjetCible IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tb_Projet WHERE id = p_IdProjetCible) THEN
        p_Erreur := 1;
        RAISE WARNING 'SP_DupliquerVersion: p_IdProjetCible = % is not the id of a tb_Projet row; nothing was copied',
            p_IdProjetCible;
        RETURN;
    END IF;
    v_parent := COALESCE(p_IdProjetCible, (SELECT v.fkProjet FROM tb_Version v WHERE v.id = p_IdSource));

    BEGIN
        CALL erpsync_debut_duplication('version', 'tb_Version', p_IdSource, p_Utilisateur, v_run);
        INSERT INTO EqVersion (id, idPrev, idParent) VALUES (1, p_IdSource, v_parent);
        CALL erpsync_copier_versions(v_run);
        CALL erpsync_copier_clients(v_run);
        CALL erpsync_copier_commandes(v_run);
        CALL erpsync_copier_lignes(v_lignes);
        SELECT e.idNext INTO p_IdNouveau FROM EqVersion e WHERE e.idPrev = p_IdSource;

        CALL erpsync_fin_duplication(v_run, p_IdNouveau, 'DUPLICATION_VERSION', 'tb_Version', p_IdSource,
                                     v_lignes, 4, p_Utilisateur);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
        p_Erreur := 1;
        p_IdNouveau := NULL;
        CALL erpsync_journaliser_echec('SP_DupliquerVersion', 'DUPLICATION_VERSION', 'tb_Version', p_IdSource,
                                       v_sqlstate, v_message, p_Utilisateur);
    END;
END
$$;
COMMENT ON PROCEDURE SP_DupliquerVersion IS
    'erpsync: deep copy of a version, into p_IdProjetCible or (NULL) its own projet';


CREATE PROCEDURE SP_DupliquerClient(
    p_IdSource        INTEGER,
    p_IdVersionCible  INTEGER,
    p_Utilisateur     VARCHAR,
    INOUT p_IdNouveau INTEGER DEFAULT NULL,
    INOUT p_Erreur    INTEGER DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_run      INTEGER;
    v_parent   INTEGER;
    v_lignes   INTEGER;
    v_sqlstate TEXT;
    v_message  TEXT;
BEGIN
    p_Erreur := 0;
    p_IdNouveau := NULL;
    IF p_IdSource IS NULL OR p_IdSource < 1 OR NOT EXISTS (SELECT 1 FROM tb_Client WHERE id = p_IdSource) THEN
        p_Erreur := 1;
        RAISE WARNING 'SP_DupliquerClient: p_IdSource = % is not the id of a tb_Client row; nothing was copied',
            COALESCE(p_IdSource::TEXT, 'NULL');
        RETURN;
    END IF;
    IF p_IdVersionCible IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tb_Version WHERE id = p_IdVersionCible) THEN
        p_Erreur := 1;
        RAISE WARNING 'SP_DupliquerClient: p_IdVersionCible = % is not the id of a tb_Version row; nothing was copied',
            p_IdVersionCible;
        RETURN;
    END IF;
    v_parent := COALESCE(p_IdVersionCible, (SELECT c.fkVersion FROM tb_Client c WHERE c.id = p_IdSource));

    BEGIN
        CALL erpsync_debut_duplication('client', 'tb_Client', p_IdSource, p_Utilisateur, v_run);
        INSERT INTO EqClient (id, idPrev, idParent) VALUES (1, p_IdSource, v_parent);
        CALL erpsync_copier_clients(v_run);
        CALL erpsync_copier_commandes(v_run);
        CALL erpsync_copier_lignes(v_lignes);
        SELECT e.idNext INTO p_IdNouveau FROM EqClient e WHERE e.idPrev = p_IdSource;

        CALL erpsync_fin_duplication(v_run, p_IdNouveau, 'DUPLICATION_CLIENT', 'tb_Client', p_IdSource,
                                     v_lignes, 3, p_Utilisateur);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
        p_Erreur := 1;
        p_IdNouveau := NULL;
        CALL erpsync_journaliser_echec('SP_DupliquerClient', 'DUPLICATION_CLIENT', 'tb_Client', p_IdSource,
                                       v_sqlstate, v_message, p_Utilisateur);
    END;
END
$$;
COMMENT ON PROCEDURE SP_DupliquerClient IS
    'erpsync: deep copy of a client, into p_IdVersionCible or (NULL) its own version';


CREATE PROCEDURE SP_DupliquerCommande(
    p_IdSource        INTEGER,
    p_IdClientCible   INTEGER,
    p_Utilisateur     VARCHAR,
    INOUT p_IdNouveau INTEGER DEFAULT NULL,
    INOUT p_Erreur    INTEGER DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_run      INTEGER;
    v_parent   INTEGER;
    v_lignes   INTEGER;
    v_sqlstate TEXT;
    v_message  TEXT;
BEGIN
    p_Erreur := 0;
    p_IdNouveau := NULL;
    IF p_IdSource IS NULL OR p_IdSource < 1 OR NOT EXISTS (SELECT 1 FROM tb_Commande WHERE id = p_IdSource) THEN
        p_Erreur := 1;
        RAISE WARNING 'SP_DupliquerCommande: p_IdSource = % is not the id of a tb_Commande row; nothing was copied',
            COALESCE(p_IdSource::TEXT, 'NULL');
        RETURN;
    END IF;
    IF p_IdClientCible IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tb_Client WHERE id = p_IdClientCible) THEN
        p_Erreur := 1;
        RAISE WARNING 'SP_DupliquerCommande: p_IdClientCible = % is not the id of a tb_Client row; nothing was copied',
            p_IdClientCible;
        RETURN;
    END IF;
    v_parent := COALESCE(p_IdClientCible, (SELECT c.fkClient FROM tb_Commande c WHERE c.id = p_IdSource));

    BEGIN
        CALL erpsync_debut_duplication('commande', 'tb_Commande', p_IdSource, p_Utilisateur, v_run);
        INSERT INTO EqCommande (id, idPrev, idParent) VALUES (1, p_IdSource, v_parent);
        CALL erpsync_copier_commandes(v_run);
        CALL erpsync_copier_lignes(v_lignes);
        SELECT e.idNext INTO p_IdNouveau FROM EqCommande e WHERE e.idPrev = p_IdSource;

        CALL erpsync_fin_duplication(v_run, p_IdNouveau, 'DUPLICATION_COMMANDE', 'tb_Commande', p_IdSource,
                                     v_lignes, 2, p_Utilisateur);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
        p_Erreur := 1;
        p_IdNouveau := NULL;
        CALL erpsync_journaliser_echec('SP_DupliquerCommande', 'DUPLICATION_COMMANDE', 'tb_Commande', p_IdSource,
                                       v_sqlstate, v_message, p_Utilisateur);
    END;
END
$$;
COMMENT ON PROCEDURE SP_DupliquerCommande IS
    'erpsync: copy of a commande with its lines, for p_IdClientCible or (NULL) its own client';


-- The lines of commande p_IdCommandeSource, appended to commande p_IdCommandeCible (NULL: to
-- the same commande). The target's MontantHT is left as it is. Journaled as
-- DUPLICATION_LIGNESCOMMANDE; p_NbLignes is the number of lines copied.
CREATE PROCEDURE SP_DupliquerLignesCommande(
    p_IdCommandeSource INTEGER,
    p_IdCommandeCible  INTEGER,
    p_Utilisateur      VARCHAR,
    INOUT p_NbLignes   INTEGER DEFAULT NULL,
    INOUT p_Erreur     INTEGER DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_cible    INTEGER;
    v_sqlstate TEXT;
    v_message  TEXT;
BEGIN
    p_Erreur := 0;
    p_NbLignes := NULL;
    IF p_IdCommandeSource IS NULL OR p_IdCommandeSource < 1
       OR NOT EXISTS (SELECT 1 FROM tb_Commande WHERE id = p_IdCommandeSource) THEN
        p_Erreur := 1;
        RAISE WARNING 'SP_DupliquerLignesCommande: p_IdCommandeSource = % is not the id of a tb_Commande row; nothing was copied',
            COALESCE(p_IdCommandeSource::TEXT, 'NULL');
        RETURN;
    END IF;
    IF p_IdCommandeCible IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tb_Commande WHERE id = p_IdCommandeCible) THEN
        p_Erreur := 1;
        RAISE WARNING 'SP_DupliquerLignesCommande: p_IdCommandeCible = % is not the id of a tb_Commande row; nothing was copied',
            p_IdCommandeCible;
        RETURN;
    END IF;
    v_cible := COALESCE(p_IdCommandeCible, p_IdCommandeSource);

    BEGIN
        IF to_regclass('pg_temp.eqcommande') IS NULL THEN
            CREATE TEMPORARY TABLE EqCommande (
                id INTEGER PRIMARY KEY, idPrev INTEGER NOT NULL UNIQUE, idNext INTEGER, idParent INTEGER NOT NULL);
        ELSE
            TRUNCATE EqCommande;
        END IF;
        INSERT INTO EqCommande (id, idPrev, idNext, idParent)
        SELECT 1, p_IdCommandeSource, c.id, c.fkClient FROM tb_Commande c WHERE c.id = v_cible;
        CALL erpsync_copier_lignes(p_NbLignes);

        CALL SP_LogOperation('DUPLICATION_LIGNESCOMMANDE', 'tb_LigneCommande', p_IdCommandeSource, v_cible,
                             format('OK: %s lines copied into tb_Commande %s', p_NbLignes, v_cible),
                             1, p_Utilisateur);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
        p_Erreur := 1;
        p_NbLignes := NULL;
        CALL erpsync_journaliser_echec('SP_DupliquerLignesCommande', 'DUPLICATION_LIGNESCOMMANDE',
                                       'tb_LigneCommande', p_IdCommandeSource, v_sqlstate, v_message,
                                       p_Utilisateur);
    END;
END
$$;
COMMENT ON PROCEDURE SP_DupliquerLignesCommande IS
    'erpsync: copy the lines of a commande into another commande';
