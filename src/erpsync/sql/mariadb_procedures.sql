-- =============================================================================================
-- erpsync — the duplication procedures of the specification, for MariaDB 10.5 and later (InnoDB)
-- =============================================================================================
--
-- Install (or replace) with either of:
--     erpsync procedures install mysql+pymysql://USER@HOST/DB
--     mysql -u USER -p DB < mariadb_procedures.sql
-- Remove with `erpsync procedures uninstall DB` (or mariadb_uninstall.sql).
--
-- Procedures for users (the specification's names and parameters):
--     CALL SP_DupliquerProjet(p_IdSource, p_Utilisateur, @id, @erreur);
--     CALL SP_DupliquerVersion(p_IdSource, p_IdProjetCible, p_Utilisateur, @id, @erreur);
--     CALL SP_DupliquerClient(p_IdSource, p_IdVersionCible, p_Utilisateur, @id, @erreur);
--     CALL SP_DupliquerCommande(p_IdSource, p_IdClientCible, p_Utilisateur, @id, @erreur);
--     CALL SP_DupliquerLignesCommande(p_IdCommandeSource, p_IdCommandeCible, p_Utilisateur, @lignes, @erreur);
--     CALL SP_GenererNumero('PROJET', p_InTransaction, @numero);
--     CALL SP_LogOperation(p_Operation, p_TableCible, p_IdSource, p_IdNouveau, p_Message, p_Succes, p_Utilisateur);
--     CALL SP_GetEqMapping('EqClient', p_IdPrev, @id, @succes);
-- A NULL target (p_Id…Cible) keeps the copy under the same parent as the original.
--
-- How they differ from the specification's text, on purpose:
--   * Set-based. Each level is copied by one INSERT … SELECT for all its rows (the versions of
--     the projet, then all their clients, then all their commandes, then all their lines), not
--     by one cursor turn and one CALL per row. The cascade Projet → Version → Client → Commande
--     → LigneCommande is the sequence of erpsync_copier_* steps below.
--   * The mapping tables EqVersion, EqClient, EqCommande (id, idPrev, idNext, idParent) are
--     InnoDB temporary tables, not MEMORY ones (which fail with "table is full" at a few hundred
--     thousand rows). They stay in the session after the CALL, so
--     `SELECT idNext FROM EqClient WHERE idPrev = 1` works as in the specification, and every
--     pair is also saved in erpsync_dup_map under a run of erpsync_dup_run, which
--     `erpsync duplicate map DB RUN TABLE OLD_ID` and SP_GetEqMapping read later.
--   * The failure row of tb_Logs survives the rollback: it is written after the ROLLBACK, in a
--     transaction of its own, before the error is re-raised (RESIGNAL).
--   * The transaction is opened by the procedure only when none is open (@@in_transaction = 0).
--     Called inside the caller's transaction, the procedure works under a savepoint: a failure
--     undoes its own work only, journals the failure in the caller's transaction and re-raises;
--     the caller decides whether to commit.
--
-- New ids: each level's copies are inserted by one INSERT … SELECT … ORDER BY the rank of
-- their source, so InnoDB numbers them in that order from LAST_INSERT_ID() (consecutive with
-- innodb_autoinc_lock_mode 0 or 1, the default; auto_increment_increment is taken into account).
-- Every computed pair is then checked against the inserted rows (parent and new business
-- number); if another session's inserts were interleaved (innodb_autoinc_lock_mode = 2), the
-- duplication fails and is rolled back rather than mapping a wrong row.
--
-- Business numbers come from the same counters (tb_Numerotation) and in the same formats as
-- erpsync's Python engine: PRJ-{year}-{n:05d}, CLI-{n:05d} (year 0), CMD-{year}-{n:05d}, year
-- being the current year.
--
-- Routines run with the privileges of their caller (SQL SECURITY INVOKER), who needs SELECT,
-- INSERT, UPDATE on the ERP and erpsync tables, and CREATE TEMPORARY TABLES.
-- =============================================================================================


-- erpsync's record of every duplication (shared with `erpsync duplicate`).
CREATE TABLE IF NOT EXISTS erpsync_dup_run (
    run_id       INT NOT NULL AUTO_INCREMENT,
    level        VARCHAR(20) NOT NULL,
    source_table VARCHAR(64) NOT NULL,
    source_id    INT NOT NULL,
    new_id       INT NULL,
    deep         SMALLINT NOT NULL,
    user_login   VARCHAR(50) NULL,
    started_at   DATETIME NOT NULL,
    status       VARCHAR(20) NOT NULL,
    PRIMARY KEY (run_id)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS erpsync_dup_map (
    run_id     INT NOT NULL,
    table_name VARCHAR(64) NOT NULL,
    old_id     INT NOT NULL,
    new_id     INT NOT NULL,
    PRIMARY KEY (run_id, table_name, old_id),
    KEY ix_erpsync_dup_map_new (run_id, table_name, new_id)
) ENGINE=InnoDB;

-- The steps `erpsync duplicate undo` checks before deleting a run's copies. Runs made by these
-- procedures record none (undo then says so); the table is created so that erpsync can read
-- the runs and maps they record.
CREATE TABLE IF NOT EXISTS erpsync_dup_step (
    run_id        INT NOT NULL,
    step_no       INT NOT NULL,
    table_name    VARCHAR(64) NOT NULL,
    parent_table  VARCHAR(64) NULL,
    parent_column VARCHAR(64) NULL,
    mapped        SMALLINT NOT NULL,
    row_count     INT NOT NULL,
    fingerprint   VARCHAR(4000) NOT NULL,
    PRIMARY KEY (run_id, step_no)
) ENGINE=InnoDB;


DELIMITER $$

-- ---------------------------------------------------------------------------------------------
-- Utilities
-- ---------------------------------------------------------------------------------------------

-- The journal: one row of tb_Logs, in the current transaction.
CREATE OR REPLACE PROCEDURE SP_LogOperation(
    IN p_Operation   VARCHAR(50),
    IN p_TableCible  VARCHAR(64),
    IN p_IdSource    INT,
    IN p_IdNouveau   INT,
    IN p_Message     VARCHAR(1000),
    IN p_Succes      TINYINT,
    IN p_Utilisateur VARCHAR(50))
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
    COMMENT 'erpsync: append one row to the journal tb_Logs'
BEGIN
    INSERT INTO tb_Logs (DateLog, Operation, TableCible, IdSource, IdNouveau, Message, Succes, Utilisateur)
    VALUES (NOW(), p_Operation, p_TableCible, p_IdSource, p_IdNouveau, LEFT(p_Message, 1000),
            IF(p_Succes, 1, 0), p_Utilisateur);
END$$


-- The business number of counter value p_N: PRJ-2026-00042, CLI-00042, CMD-2026-00042
-- (at least five digits, never truncated).
CREATE OR REPLACE FUNCTION erpsync_numero(p_TypeNumero VARCHAR(20), p_Annee INT, p_N BIGINT)
    RETURNS VARCHAR(20)
    DETERMINISTIC NO SQL
    SQL SECURITY INVOKER
    COMMENT 'erpsync: format a business number as the Python engine does'
RETURN CONCAT(
    CASE p_TypeNumero
        WHEN 'PROJET'   THEN CONCAT('PRJ-', p_Annee, '-')
        WHEN 'CLIENT'   THEN 'CLI-'
        WHEN 'COMMANDE' THEN CONCAT('CMD-', p_Annee, '-')
    END,
    LPAD(p_N, GREATEST(5, CHAR_LENGTH(p_N)), '0'))$$


-- Draw p_Nombre consecutive numbers of one type from tb_Numerotation, in the current
-- transaction: the counter row stays locked until it ends. The series of PROJET and COMMANDE
-- restart each year; CLIENT has one series (Annee = 0).
CREATE OR REPLACE PROCEDURE erpsync_reserver_numeros(
    IN  p_TypeNumero VARCHAR(20),
    IN  p_Nombre     INT,
    OUT p_Annee      INT,
    OUT p_Premier    INT)
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
BEGIN
    DECLARE v_message VARCHAR(200);
    IF p_TypeNumero IS NULL OR p_TypeNumero NOT IN ('PROJET', 'CLIENT', 'COMMANDE') THEN
        SET v_message = CONCAT('unknown number type ', COALESCE(CONCAT('''', p_TypeNumero, ''''), 'NULL'),
                               ': use PROJET, CLIENT or COMMANDE');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    SET p_Annee = IF(p_TypeNumero = 'CLIENT', 0, YEAR(CURDATE()));
    -- One statement creates or advances the counter; LAST_INSERT_ID(expr) hands its new value
    -- back to this session (MariaDB's documented way of emulating a sequence).
    INSERT INTO tb_Numerotation (TypeNumero, Annee, DernierNumero)
    VALUES (p_TypeNumero, p_Annee, LAST_INSERT_ID(p_Nombre))
    ON DUPLICATE KEY UPDATE DernierNumero = LAST_INSERT_ID(DernierNumero + p_Nombre);
    SET p_Premier = LAST_INSERT_ID() - p_Nombre + 1;
END$$


-- One new business number. p_InTransaction = 1: inside the caller's transaction (the number is
-- given back if it rolls back). p_InTransaction = 0: in a transaction of its own, committed at
-- once — unless a transaction is already open, which is never committed behind the caller's back
-- (the number is then drawn inside it, as with 1).
CREATE OR REPLACE PROCEDURE SP_GenererNumero(
    IN  p_TypeNumero    VARCHAR(20),
    IN  p_InTransaction TINYINT,
    OUT p_Numero        VARCHAR(20))
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
    COMMENT 'erpsync: draw a new NumProjet, client Code or NumCommande'
BEGIN
    DECLARE v_own_tx  BOOLEAN DEFAULT (COALESCE(p_InTransaction, 0) = 0 AND @@in_transaction = 0);
    DECLARE v_annee   INT;
    DECLARE v_premier INT;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        IF v_own_tx THEN
            ROLLBACK;
        END IF;
        SET p_Numero = NULL;
        RESIGNAL;
    END;

    SET p_Numero = NULL;
    IF v_own_tx THEN
        START TRANSACTION;
    END IF;
    CALL erpsync_reserver_numeros(p_TypeNumero, 1, v_annee, v_premier);
    SET p_Numero = erpsync_numero(p_TypeNumero, v_annee, v_premier);
    IF v_own_tx THEN
        COMMIT;
    END IF;
END$$


-- The table an id map is about: EqClient, tb_Client or client all mean tb_Client.
CREATE OR REPLACE FUNCTION erpsync_table_mapping(p_Nom VARCHAR(64))
    RETURNS VARCHAR(64)
    DETERMINISTIC NO SQL
    SQL SECURITY INVOKER
RETURN CASE LOWER(p_Nom)
    WHEN 'eqprojet'        THEN 'tb_Projet'
    WHEN 'tb_projet'       THEN 'tb_Projet'
    WHEN 'projet'          THEN 'tb_Projet'
    WHEN 'eqversion'       THEN 'tb_Version'
    WHEN 'tb_version'      THEN 'tb_Version'
    WHEN 'version'         THEN 'tb_Version'
    WHEN 'eqclient'        THEN 'tb_Client'
    WHEN 'tb_client'       THEN 'tb_Client'
    WHEN 'client'          THEN 'tb_Client'
    WHEN 'eqcommande'      THEN 'tb_Commande'
    WHEN 'tb_commande'     THEN 'tb_Commande'
    WHEN 'commande'        THEN 'tb_Commande'
END$$


-- The new id given to row p_IdPrev by the latest duplication made in this session, else by the
-- latest duplication (not undone) that copied it — whether made by these procedures or by
-- `erpsync duplicate`. p_Succes = 1 if found, else 0 and p_IdNext is NULL.
CREATE OR REPLACE PROCEDURE SP_GetEqMapping(
    IN  p_TableMapping VARCHAR(64),
    IN  p_IdPrev       INT,
    OUT p_IdNext       INT,
    OUT p_Succes       TINYINT)
    READS SQL DATA
    SQL SECURITY INVOKER
    COMMENT 'erpsync: old id -> new id of a duplication (EqVersion, EqClient, EqCommande, EqProjet)'
BEGIN
    DECLARE v_table   VARCHAR(64) DEFAULT erpsync_table_mapping(p_TableMapping);
    DECLARE v_message VARCHAR(200);
    IF v_table IS NULL THEN
        SET v_message = CONCAT('unknown mapping table ', COALESCE(CONCAT('''', p_TableMapping, ''''), 'NULL'),
                               ': use EqProjet, EqVersion, EqClient or EqCommande');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
    -- This session's latest run first (a primary-key lookup) …
    SET p_IdNext = (
        SELECT m.new_id
        FROM erpsync_dup_map m
        JOIN erpsync_dup_run r ON r.run_id = m.run_id AND r.status = 'done'
        WHERE m.run_id = @erpsync_run_id AND m.table_name = v_table AND m.old_id = p_IdPrev);
    -- … else the newest run that copied the row (runs newest first, a primary-key probe each).
    IF p_IdNext IS NULL THEN
        SET p_IdNext = (
            SELECT m.new_id
            FROM erpsync_dup_run r
            JOIN erpsync_dup_map m ON m.run_id = r.run_id AND m.table_name = v_table AND m.old_id = p_IdPrev
            WHERE r.status = 'done'
            ORDER BY r.run_id DESC
            LIMIT 1);
    END IF;
    SET p_Succes = IF(p_IdNext IS NULL, 0, 1);
END$$


-- ---------------------------------------------------------------------------------------------
-- The steps of a duplication (internal: called by the SP_Dupliquer* procedures, in their
-- transaction). A step copies every row listed in its mapping table, saves the id pairs, and
-- lists the children of those rows in the next mapping table.
-- ---------------------------------------------------------------------------------------------

-- A new run in erpsync_dup_run, and empty mapping tables for it.
CREATE OR REPLACE PROCEDURE erpsync_debut_duplication(
    IN  p_Niveau      VARCHAR(20),
    IN  p_TableSource VARCHAR(64),
    IN  p_IdSource    INT,
    IN  p_Utilisateur VARCHAR(50),
    OUT p_Run         INT)
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
BEGIN
    INSERT INTO erpsync_dup_run (level, source_table, source_id, new_id, deep, user_login, started_at, status)
    VALUES (p_Niveau, p_TableSource, p_IdSource, NULL, 1, p_Utilisateur, NOW(), 'done');
    SET p_Run = LAST_INSERT_ID();

    -- id: rank of the row in its level (1, 2, …, in the order of the source ids); idPrev: the
    -- original; idNext: its copy; idParent: the parent the copy goes under.
    -- (CREATE/DROP TEMPORARY TABLE do not commit the transaction.)
    DROP TEMPORARY TABLE IF EXISTS EqVersion, EqClient, EqCommande;
    CREATE TEMPORARY TABLE EqVersion (
        id       INT NOT NULL PRIMARY KEY,
        idPrev   INT NOT NULL,
        idNext   INT NULL,
        idParent INT NOT NULL,
        UNIQUE KEY (idPrev)
    ) ENGINE=InnoDB;
    CREATE TEMPORARY TABLE EqClient (
        id       INT NOT NULL PRIMARY KEY,
        idPrev   INT NOT NULL,
        idNext   INT NULL,
        idParent INT NOT NULL,
        UNIQUE KEY (idPrev)
    ) ENGINE=InnoDB;
    CREATE TEMPORARY TABLE EqCommande (
        id       INT NOT NULL PRIMARY KEY,
        idPrev   INT NOT NULL,
        idNext   INT NULL,
        idParent INT NOT NULL,
        UNIQUE KEY (idPrev)
    ) ENGINE=InnoDB;
END$$


-- Refuse a level whose computed new ids are not exactly the rows just inserted.
CREATE OR REPLACE PROCEDURE erpsync_verifier_ids(IN p_Table VARCHAR(64), IN p_Attendu INT, IN p_Trouve INT)
    NO SQL
    SQL SECURITY INVOKER
BEGIN
    DECLARE v_message VARCHAR(300);
    IF p_Trouve <> p_Attendu THEN
        SET v_message = CONCAT('the ', p_Attendu, ' copies of ', p_Table, ' did not get consecutive ids (',
                               p_Trouve, ' matched): innodb_autoinc_lock_mode = 2 with concurrent inserts? ',
                               'Nothing was copied; try again');
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_message;
    END IF;
END$$


-- Versions listed in EqVersion → copies under idParent; their clients → EqClient.
CREATE OR REPLACE PROCEDURE erpsync_copier_versions(IN p_Run INT)
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
BEGIN
    DECLARE v_n       INT;
    DECLARE v_premier BIGINT;
    DECLARE v_trouve  INT;
    SELECT COUNT(*) INTO v_n FROM EqVersion;
    IF v_n > 0 THEN
        INSERT INTO tb_Version (fkProjet, NumVersion, Libelle, DateCreation)
        SELECT e.idParent, v.NumVersion, v.Libelle, v.DateCreation
        FROM EqVersion e
        JOIN tb_Version v ON v.id = e.idPrev
        ORDER BY e.id;
        SET v_premier = LAST_INSERT_ID();
        UPDATE EqVersion SET idNext = v_premier + (id - 1) * @@auto_increment_increment;

        SELECT COUNT(*) INTO v_trouve
        FROM EqVersion e
        JOIN tb_Version c ON c.id = e.idNext AND c.fkProjet = e.idParent
        JOIN tb_Version s ON s.id = e.idPrev AND s.NumVersion = c.NumVersion AND s.DateCreation = c.DateCreation;
        CALL erpsync_verifier_ids('tb_Version', v_n, v_trouve);

        INSERT INTO erpsync_dup_map (run_id, table_name, old_id, new_id)
        SELECT p_Run, 'tb_Version', idPrev, idNext FROM EqVersion;

        INSERT INTO EqClient (id, idPrev, idParent)
        SELECT ROW_NUMBER() OVER (ORDER BY c.id), c.id, e.idNext
        FROM tb_Client c
        JOIN EqVersion e ON c.fkVersion = e.idPrev;
    END IF;
END$$


-- Clients listed in EqClient → copies with new codes; their commandes → EqCommande.
CREATE OR REPLACE PROCEDURE erpsync_copier_clients(IN p_Run INT)
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
BEGIN
    DECLARE v_n       INT;
    DECLARE v_annee   INT;
    DECLARE v_numero  INT;
    DECLARE v_premier BIGINT;
    DECLARE v_trouve  INT;
    SELECT COUNT(*) INTO v_n FROM EqClient;
    IF v_n > 0 THEN
        -- codes v_numero … v_numero + v_n - 1, given in the order of the source ids
        CALL erpsync_reserver_numeros('CLIENT', v_n, v_annee, v_numero);
        INSERT INTO tb_Client (fkVersion, Code, RaisonSociale, Email, Telephone)
        SELECT e.idParent, erpsync_numero('CLIENT', v_annee, v_numero + e.id - 1),
               c.RaisonSociale, c.Email, c.Telephone
        FROM EqClient e
        JOIN tb_Client c ON c.id = e.idPrev
        ORDER BY e.id;
        SET v_premier = LAST_INSERT_ID();
        UPDATE EqClient SET idNext = v_premier + (id - 1) * @@auto_increment_increment;

        SELECT COUNT(*) INTO v_trouve
        FROM EqClient e
        JOIN tb_Client c ON c.id = e.idNext AND c.fkVersion = e.idParent
                        AND CAST(SUBSTRING_INDEX(c.Code, '-', -1) AS UNSIGNED) = v_numero + e.id - 1;
        CALL erpsync_verifier_ids('tb_Client', v_n, v_trouve);

        INSERT INTO erpsync_dup_map (run_id, table_name, old_id, new_id)
        SELECT p_Run, 'tb_Client', idPrev, idNext FROM EqClient;

        INSERT INTO EqCommande (id, idPrev, idParent)
        SELECT ROW_NUMBER() OVER (ORDER BY c.id), c.id, e.idNext
        FROM tb_Commande c
        JOIN EqClient e ON c.fkClient = e.idPrev;
    END IF;
END$$


-- Commandes listed in EqCommande → copies with new numbers (MontantHT is copied as is).
CREATE OR REPLACE PROCEDURE erpsync_copier_commandes(IN p_Run INT)
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
BEGIN
    DECLARE v_n       INT;
    DECLARE v_annee   INT;
    DECLARE v_numero  INT;
    DECLARE v_premier BIGINT;
    DECLARE v_trouve  INT;
    SELECT COUNT(*) INTO v_n FROM EqCommande;
    IF v_n > 0 THEN
        CALL erpsync_reserver_numeros('COMMANDE', v_n, v_annee, v_numero);
        INSERT INTO tb_Commande (fkClient, NumCommande, DateCommande, Statut, MontantHT)
        SELECT e.idParent, erpsync_numero('COMMANDE', v_annee, v_numero + e.id - 1),
               c.DateCommande, c.Statut, c.MontantHT
        FROM EqCommande e
        JOIN tb_Commande c ON c.id = e.idPrev
        ORDER BY e.id;
        SET v_premier = LAST_INSERT_ID();
        UPDATE EqCommande SET idNext = v_premier + (id - 1) * @@auto_increment_increment;

        SELECT COUNT(*) INTO v_trouve
        FROM EqCommande e
        JOIN tb_Commande c ON c.id = e.idNext AND c.fkClient = e.idParent
                          AND CAST(SUBSTRING_INDEX(c.NumCommande, '-', -1) AS UNSIGNED) = v_numero + e.id - 1;
        CALL erpsync_verifier_ids('tb_Commande', v_n, v_trouve);

        INSERT INTO erpsync_dup_map (run_id, table_name, old_id, new_id)
        SELECT p_Run, 'tb_Commande', idPrev, idNext FROM EqCommande;
    END IF;
END$$


-- The lines of every commande in EqCommande → under its copy idNext. Lines have no children,
-- so no mapping is kept: the database numbers them, and they are found through EqCommande.
CREATE OR REPLACE PROCEDURE erpsync_copier_lignes(OUT p_Lignes INT)
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
BEGIN
    INSERT INTO tb_LigneCommande (fkCommande, NumLigne, Reference, Designation, Quantite, PrixUnitaire)
    SELECT e.idNext, l.NumLigne, l.Reference, l.Designation, l.Quantite, l.PrixUnitaire
    FROM EqCommande e
    JOIN tb_LigneCommande l ON l.fkCommande = e.idPrev;
    SET p_Lignes = ROW_COUNT();
END$$


-- Record the new root id, journal the success, and remember the run for SP_GetEqMapping.
CREATE OR REPLACE PROCEDURE erpsync_fin_duplication(
    IN p_Run         INT,
    IN p_IdNouveau   INT,
    IN p_Operation   VARCHAR(50),
    IN p_TableCible  VARCHAR(64),
    IN p_IdSource    INT,
    IN p_Lignes      INT,
    IN p_Tables      INT,
    IN p_Utilisateur VARCHAR(50))
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
BEGIN
    DECLARE v_lignes INT;
    UPDATE erpsync_dup_run SET new_id = p_IdNouveau WHERE run_id = p_Run;
    SELECT COUNT(*) + p_Lignes INTO v_lignes FROM erpsync_dup_map WHERE run_id = p_Run;
    CALL SP_LogOperation(p_Operation, p_TableCible, p_IdSource, p_IdNouveau,
                         CONCAT('OK: run ', p_Run, ', ', v_lignes, ' rows in ', p_Tables, ' tables'),
                         1, p_Utilisateur);
    SET @erpsync_run_id = p_Run;
END$$


-- Journal a failure after the rollback: in a transaction of its own when the procedure owned
-- the transaction (so the row survives), else in the caller's transaction.
CREATE OR REPLACE PROCEDURE erpsync_journaliser_echec(
    IN p_PropreTransaction BOOLEAN,
    IN p_Operation         VARCHAR(50),
    IN p_TableCible        VARCHAR(64),
    IN p_IdSource          INT,
    IN p_Errno             INT,
    IN p_SqlState          CHAR(5),
    IN p_Message           VARCHAR(1000),
    IN p_Utilisateur       VARCHAR(50))
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
BEGIN
    IF p_PropreTransaction THEN
        START TRANSACTION;
    END IF;
    CALL SP_LogOperation(p_Operation, p_TableCible, p_IdSource, -1,
                         CONCAT('Error ', p_Errno, ' (', p_SqlState, '): ', p_Message), 0, p_Utilisateur);
    IF p_PropreTransaction THEN
        COMMIT;
    END IF;
END$$


-- A warning for a refused call (the caller sees it with SHOW WARNINGS); nothing is written.
CREATE OR REPLACE PROCEDURE erpsync_refuser(IN p_Message VARCHAR(300))
    NO SQL
    SQL SECURITY INVOKER
BEGIN
    SIGNAL SQLSTATE '01000' SET MESSAGE_TEXT = p_Message;
END$$


-- ---------------------------------------------------------------------------------------------
-- The duplications. Each one:
--   1. validates its parameters: a NULL, < 1 or unknown id sets p_Erreur = 1, leaves a warning
--      and writes nothing (LEAVE proc_main);
--   2. opens the transaction if none is open (else sets a savepoint in the caller's);
--   3. copies its level and every level below, set-based;
--   4. journals the success and commits; on any error: rolls back, p_Erreur = 1, journals the
--      failure so that it survives, and re-raises the error (RESIGNAL).
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE PROCEDURE SP_DupliquerProjet(
    IN  p_IdSource    INT,
    IN  p_Utilisateur VARCHAR(50),
    OUT p_IdNouveau   INT,
    OUT p_Erreur      TINYINT)
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
    COMMENT 'erpsync: deep copy of a projet with its versions, clients, commandes and lines'
proc_main: BEGIN
    DECLARE v_own_tx   BOOLEAN DEFAULT (@@in_transaction = 0);
    DECLARE v_started  BOOLEAN DEFAULT FALSE;
    DECLARE v_run      INT;
    DECLARE v_numero   VARCHAR(20);
    DECLARE v_lignes   INT;
    DECLARE v_errno    INT;
    DECLARE v_sqlstate CHAR(5);
    DECLARE v_message  VARCHAR(1000);

    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        GET DIAGNOSTICS CONDITION 1
            v_sqlstate = RETURNED_SQLSTATE, v_errno = MYSQL_ERRNO, v_message = MESSAGE_TEXT;
        IF v_own_tx THEN
            ROLLBACK;
        ELSEIF v_started AND @@in_transaction = 1 THEN  -- (a deadlock already rolled it all back)
            ROLLBACK TO SAVEPOINT erpsync_duplication;
        END IF;
        SET p_Erreur = 1, p_IdNouveau = NULL;
        CALL erpsync_journaliser_echec(v_own_tx, 'DUPLICATION_PROJET', 'tb_Projet', p_IdSource,
                                       v_errno, v_sqlstate, v_message, p_Utilisateur);
        RESIGNAL;
    END;

    SET p_Erreur = 0, p_IdNouveau = NULL;
    IF p_IdSource IS NULL OR p_IdSource < 1 OR NOT EXISTS (SELECT 1 FROM tb_Projet WHERE id = p_IdSource) THEN
        SET p_Erreur = 1;
        CALL erpsync_refuser(CONCAT('SP_DupliquerProjet: p_IdSource = ', COALESCE(p_IdSource, 'NULL'),
                                    ' is not the id of a tb_Projet row; nothing was copied'));
        LEAVE proc_main;
    END IF;

    IF v_own_tx THEN
        START TRANSACTION;
    ELSE
        SAVEPOINT erpsync_duplication;
    END IF;
    SET v_started = TRUE;
    CALL erpsync_debut_duplication('projet', 'tb_Projet', p_IdSource, p_Utilisateur, v_run);

    CALL SP_GenererNumero('PROJET', 1, v_numero);
    INSERT INTO tb_Projet (NumProjet, Libelle, fkCreateur, DateCreation)
    SELECT v_numero, Libelle, fkCreateur, DateCreation FROM tb_Projet WHERE id = p_IdSource;
    SET p_IdNouveau = LAST_INSERT_ID();
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
    IF v_own_tx THEN
        COMMIT;
    ELSE
        RELEASE SAVEPOINT erpsync_duplication;
    END IF;
END proc_main$$


CREATE OR REPLACE PROCEDURE SP_DupliquerVersion(
    IN  p_IdSource      INT,
    IN  p_IdProjetCible INT,
    IN  p_Utilisateur   VARCHAR(50),
    OUT p_IdNouveau     INT,
    OUT p_Erreur        TINYINT)
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
    COMMENT 'erpsync: deep copy of a version, into p_IdProjetCible or (NULL) its own projet'
proc_main: BEGIN
    DECLARE v_own_tx   BOOLEAN DEFAULT (@@in_transaction = 0);
    DECLARE v_started  BOOLEAN DEFAULT FALSE;
    DECLARE v_run      INT;
    DECLARE v_parent   INT;
    DECLARE v_lignes   INT;
    DECLARE v_errno    INT;
    DECLARE v_sqlstate CHAR(5);
    DECLARE v_message  VARCHAR(1000);

    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        GET DIAGNOSTICS CONDITION 1
            v_sqlstate = RETURNED_SQLSTATE, v_errno = MYSQL_ERRNO, v_message = MESSAGE_TEXT;
        IF v_own_tx THEN
            ROLLBACK;
        ELSEIF v_started AND @@in_transaction = 1 THEN  -- (a deadlock already rolled it all back)
            ROLLBACK TO SAVEPOINT erpsync_duplication;
        END IF;
        SET p_Erreur = 1, p_IdNouveau = NULL;
        CALL erpsync_journaliser_echec(v_own_tx, 'DUPLICATION_VERSION', 'tb_Version', p_IdSource,
                                       v_errno, v_sqlstate, v_message, p_Utilisateur);
        RESIGNAL;
    END;

    SET p_Erreur = 0, p_IdNouveau = NULL;
    IF p_IdSource IS NULL OR p_IdSource < 1 OR NOT EXISTS (SELECT 1 FROM tb_Version WHERE id = p_IdSource) THEN
        SET p_Erreur = 1;
        CALL erpsync_refuser(CONCAT('SP_DupliquerVersion: p_IdSource = ', COALESCE(p_IdSource, 'NULL'),
                                    ' is not the id of a tb_Version row; nothing was copied'));
        LEAVE proc_main;
    END IF;
    IF p_IdProjetCible IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tb_Projet WHERE id = p_IdProjetCible) THEN
        SET p_Erreur = 1;
        CALL erpsync_refuser(CONCAT('SP_DupliquerVersion: p_IdProjetCible = ', p_IdProjetCible,
                                    ' is not the id of a tb_Projet row; nothing was copied'));
        LEAVE proc_main;
    END IF;
    SET v_parent = COALESCE(p_IdProjetCible, (SELECT fkProjet FROM tb_Version WHERE id = p_IdSource));

    IF v_own_tx THEN
        START TRANSACTION;
    ELSE
        SAVEPOINT erpsync_duplication;
    END IF;
    SET v_started = TRUE;
    CALL erpsync_debut_duplication('version', 'tb_Version', p_IdSource, p_Utilisateur, v_run);

    INSERT INTO EqVersion (id, idPrev, idParent) VALUES (1, p_IdSource, v_parent);
    CALL erpsync_copier_versions(v_run);
    CALL erpsync_copier_clients(v_run);
    CALL erpsync_copier_commandes(v_run);
    CALL erpsync_copier_lignes(v_lignes);
    SET p_IdNouveau = (SELECT idNext FROM EqVersion WHERE idPrev = p_IdSource);

    CALL erpsync_fin_duplication(v_run, p_IdNouveau, 'DUPLICATION_VERSION', 'tb_Version', p_IdSource,
                                 v_lignes, 4, p_Utilisateur);
    IF v_own_tx THEN
        COMMIT;
    ELSE
        RELEASE SAVEPOINT erpsync_duplication;
    END IF;
END proc_main$$


CREATE OR REPLACE PROCEDURE SP_DupliquerClient(
    IN  p_IdSource       INT,
    IN  p_IdVersionCible INT,
    IN  p_Utilisateur    VARCHAR(50),
    OUT p_IdNouveau      INT,
    OUT p_Erreur         TINYINT)
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
    COMMENT 'erpsync: deep copy of a client, into p_IdVersionCible or (NULL) its own version'
proc_main: BEGIN
    DECLARE v_own_tx   BOOLEAN DEFAULT (@@in_transaction = 0);
    DECLARE v_started  BOOLEAN DEFAULT FALSE;
    DECLARE v_run      INT;
    DECLARE v_parent   INT;
    DECLARE v_lignes   INT;
    DECLARE v_errno    INT;
    DECLARE v_sqlstate CHAR(5);
    DECLARE v_message  VARCHAR(1000);

    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        GET DIAGNOSTICS CONDITION 1
            v_sqlstate = RETURNED_SQLSTATE, v_errno = MYSQL_ERRNO, v_message = MESSAGE_TEXT;
        IF v_own_tx THEN
            ROLLBACK;
        ELSEIF v_started AND @@in_transaction = 1 THEN  -- (a deadlock already rolled it all back)
            ROLLBACK TO SAVEPOINT erpsync_duplication;
        END IF;
        SET p_Erreur = 1, p_IdNouveau = NULL;
        CALL erpsync_journaliser_echec(v_own_tx, 'DUPLICATION_CLIENT', 'tb_Client', p_IdSource,
                                       v_errno, v_sqlstate, v_message, p_Utilisateur);
        RESIGNAL;
    END;

    SET p_Erreur = 0, p_IdNouveau = NULL;
    IF p_IdSource IS NULL OR p_IdSource < 1 OR NOT EXISTS (SELECT 1 FROM tb_Client WHERE id = p_IdSource) THEN
        SET p_Erreur = 1;
        CALL erpsync_refuser(CONCAT('SP_DupliquerClient: p_IdSource = ', COALESCE(p_IdSource, 'NULL'),
                                    ' is not the id of a tb_Client row; nothing was copied'));
        LEAVE proc_main;
    END IF;
    IF p_IdVersionCible IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tb_Version WHERE id = p_IdVersionCible) THEN
        SET p_Erreur = 1;
        CALL erpsync_refuser(CONCAT('SP_DupliquerClient: p_IdVersionCible = ', p_IdVersionCible,
                                    ' is not the id of a tb_Version row; nothing was copied'));
        LEAVE proc_main;
    END IF;
    SET v_parent = COALESCE(p_IdVersionCible, (SELECT fkVersion FROM tb_Client WHERE id = p_IdSource));

    IF v_own_tx THEN
        START TRANSACTION;
    ELSE
        SAVEPOINT erpsync_duplication;
    END IF;
    SET v_started = TRUE;
    CALL erpsync_debut_duplication('client', 'tb_Client', p_IdSource, p_Utilisateur, v_run);

    INSERT INTO EqClient (id, idPrev, idParent) VALUES (1, p_IdSource, v_parent);
    CALL erpsync_copier_clients(v_run);
    CALL erpsync_copier_commandes(v_run);
    CALL erpsync_copier_lignes(v_lignes);
    SET p_IdNouveau = (SELECT idNext FROM EqClient WHERE idPrev = p_IdSource);

    CALL erpsync_fin_duplication(v_run, p_IdNouveau, 'DUPLICATION_CLIENT', 'tb_Client', p_IdSource,
                                 v_lignes, 3, p_Utilisateur);
    IF v_own_tx THEN
        COMMIT;
    ELSE
        RELEASE SAVEPOINT erpsync_duplication;
    END IF;
END proc_main$$


CREATE OR REPLACE PROCEDURE SP_DupliquerCommande(
    IN  p_IdSource      INT,
    IN  p_IdClientCible INT,
    IN  p_Utilisateur   VARCHAR(50),
    OUT p_IdNouveau     INT,
    OUT p_Erreur        TINYINT)
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
    COMMENT 'erpsync: copy of a commande with its lines, for p_IdClientCible or (NULL) its own client'
proc_main: BEGIN
    DECLARE v_own_tx   BOOLEAN DEFAULT (@@in_transaction = 0);
    DECLARE v_started  BOOLEAN DEFAULT FALSE;
    DECLARE v_run      INT;
    DECLARE v_parent   INT;
    DECLARE v_lignes   INT;
    DECLARE v_errno    INT;
    DECLARE v_sqlstate CHAR(5);
    DECLARE v_message  VARCHAR(1000);

    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        GET DIAGNOSTICS CONDITION 1
            v_sqlstate = RETURNED_SQLSTATE, v_errno = MYSQL_ERRNO, v_message = MESSAGE_TEXT;
        IF v_own_tx THEN
            ROLLBACK;
        ELSEIF v_started AND @@in_transaction = 1 THEN  -- (a deadlock already rolled it all back)
            ROLLBACK TO SAVEPOINT erpsync_duplication;
        END IF;
        SET p_Erreur = 1, p_IdNouveau = NULL;
        CALL erpsync_journaliser_echec(v_own_tx, 'DUPLICATION_COMMANDE', 'tb_Commande', p_IdSource,
                                       v_errno, v_sqlstate, v_message, p_Utilisateur);
        RESIGNAL;
    END;

    SET p_Erreur = 0, p_IdNouveau = NULL;
    IF p_IdSource IS NULL OR p_IdSource < 1 OR NOT EXISTS (SELECT 1 FROM tb_Commande WHERE id = p_IdSource) THEN
        SET p_Erreur = 1;
        CALL erpsync_refuser(CONCAT('SP_DupliquerCommande: p_IdSource = ', COALESCE(p_IdSource, 'NULL'),
                                    ' is not the id of a tb_Commande row; nothing was copied'));
        LEAVE proc_main;
    END IF;
    IF p_IdClientCible IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tb_Client WHERE id = p_IdClientCible) THEN
        SET p_Erreur = 1;
        CALL erpsync_refuser(CONCAT('SP_DupliquerCommande: p_IdClientCible = ', p_IdClientCible,
                                    ' is not the id of a tb_Client row; nothing was copied'));
        LEAVE proc_main;
    END IF;
    SET v_parent = COALESCE(p_IdClientCible, (SELECT fkClient FROM tb_Commande WHERE id = p_IdSource));

    IF v_own_tx THEN
        START TRANSACTION;
    ELSE
        SAVEPOINT erpsync_duplication;
    END IF;
    SET v_started = TRUE;
    CALL erpsync_debut_duplication('commande', 'tb_Commande', p_IdSource, p_Utilisateur, v_run);

    INSERT INTO EqCommande (id, idPrev, idParent) VALUES (1, p_IdSource, v_parent);
    CALL erpsync_copier_commandes(v_run);
    CALL erpsync_copier_lignes(v_lignes);
    SET p_IdNouveau = (SELECT idNext FROM EqCommande WHERE idPrev = p_IdSource);

    CALL erpsync_fin_duplication(v_run, p_IdNouveau, 'DUPLICATION_COMMANDE', 'tb_Commande', p_IdSource,
                                 v_lignes, 2, p_Utilisateur);
    IF v_own_tx THEN
        COMMIT;
    ELSE
        RELEASE SAVEPOINT erpsync_duplication;
    END IF;
END proc_main$$


-- The lines of commande p_IdCommandeSource, appended to commande p_IdCommandeCible (NULL: to
-- the same commande). The target's MontantHT is left as it is. Journaled as
-- DUPLICATION_LIGNESCOMMANDE; p_NbLignes is the number of lines copied.
CREATE OR REPLACE PROCEDURE SP_DupliquerLignesCommande(
    IN  p_IdCommandeSource INT,
    IN  p_IdCommandeCible  INT,
    IN  p_Utilisateur      VARCHAR(50),
    OUT p_NbLignes         INT,
    OUT p_Erreur           TINYINT)
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
    COMMENT 'erpsync: copy the lines of a commande into another commande'
proc_main: BEGIN
    DECLARE v_own_tx   BOOLEAN DEFAULT (@@in_transaction = 0);
    DECLARE v_started  BOOLEAN DEFAULT FALSE;
    DECLARE v_cible    INT;
    DECLARE v_errno    INT;
    DECLARE v_sqlstate CHAR(5);
    DECLARE v_message  VARCHAR(1000);

    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        GET DIAGNOSTICS CONDITION 1
            v_sqlstate = RETURNED_SQLSTATE, v_errno = MYSQL_ERRNO, v_message = MESSAGE_TEXT;
        IF v_own_tx THEN
            ROLLBACK;
        ELSEIF v_started AND @@in_transaction = 1 THEN  -- (a deadlock already rolled it all back)
            ROLLBACK TO SAVEPOINT erpsync_duplication;
        END IF;
        SET p_Erreur = 1, p_NbLignes = NULL;
        CALL erpsync_journaliser_echec(v_own_tx, 'DUPLICATION_LIGNESCOMMANDE', 'tb_LigneCommande',
                                       p_IdCommandeSource, v_errno, v_sqlstate, v_message, p_Utilisateur);
        RESIGNAL;
    END;

    SET p_Erreur = 0, p_NbLignes = NULL;
    IF p_IdCommandeSource IS NULL OR p_IdCommandeSource < 1
       OR NOT EXISTS (SELECT 1 FROM tb_Commande WHERE id = p_IdCommandeSource) THEN
        SET p_Erreur = 1;
        CALL erpsync_refuser(CONCAT('SP_DupliquerLignesCommande: p_IdCommandeSource = ', COALESCE(p_IdCommandeSource, 'NULL'),
                                    ' is not the id of a tb_Commande row; nothing was copied'));
        LEAVE proc_main;
    END IF;
    IF p_IdCommandeCible IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tb_Commande WHERE id = p_IdCommandeCible) THEN
        SET p_Erreur = 1;
        CALL erpsync_refuser(CONCAT('SP_DupliquerLignesCommande: p_IdCommandeCible = ', p_IdCommandeCible,
                                    ' is not the id of a tb_Commande row; nothing was copied'));
        LEAVE proc_main;
    END IF;
    SET v_cible = COALESCE(p_IdCommandeCible, p_IdCommandeSource);

    IF v_own_tx THEN
        START TRANSACTION;
    ELSE
        SAVEPOINT erpsync_duplication;
    END IF;
    SET v_started = TRUE;
    DROP TEMPORARY TABLE IF EXISTS EqCommande;
    CREATE TEMPORARY TABLE EqCommande (
        id       INT NOT NULL PRIMARY KEY,
        idPrev   INT NOT NULL,
        idNext   INT NULL,
        idParent INT NOT NULL,
        UNIQUE KEY (idPrev)
    ) ENGINE=InnoDB;
    INSERT INTO EqCommande (id, idPrev, idNext, idParent)
    SELECT 1, p_IdCommandeSource, id, fkClient FROM tb_Commande WHERE id = v_cible;
    CALL erpsync_copier_lignes(p_NbLignes);

    CALL SP_LogOperation('DUPLICATION_LIGNESCOMMANDE', 'tb_LigneCommande', p_IdCommandeSource, v_cible,
                         CONCAT('OK: ', p_NbLignes, ' lines copied into tb_Commande ', v_cible), 1, p_Utilisateur);
    IF v_own_tx THEN
        COMMIT;
    ELSE
        RELEASE SAVEPOINT erpsync_duplication;
    END IF;
END proc_main$$

DELIMITER ;
