-- Benchmark only: the duplication written the way the specification describes it (seed 002),
-- for comparison with erpsync's set-based SP_DupliquerProjet. Not shipped, not for production.
--
-- One cursor turn and one CALL per version, client and commande; each procedure creates its
-- ENGINE=MEMORY mapping table (EqVersion, EqClient, EqCommande) and drops it at the end; a new
-- number is drawn with SP_GenererNumero(…, 1, …) for each copied projet, client and commande;
-- the lines of a commande are copied by SP_DupliquerLignesCommande in one INSERT … SELECT per
-- commande. The transaction is opened by the top level only. Needs erpsync's procedures
-- (SP_GenererNumero, SP_LogOperation) installed first.

DELIMITER $$

CREATE OR REPLACE PROCEDURE bench_curseur_lignes(IN p_IdCommandeSource INT, IN p_IdCommandeCible INT)
BEGIN
    INSERT INTO tb_LigneCommande (fkCommande, NumLigne, Reference, Designation, Quantite, PrixUnitaire)
    SELECT p_IdCommandeCible, NumLigne, Reference, Designation, Quantite, PrixUnitaire
    FROM tb_LigneCommande
    WHERE fkCommande = p_IdCommandeSource;
END$$

CREATE OR REPLACE PROCEDURE bench_curseur_commande(IN p_IdSource INT, IN p_IdClientCible INT, OUT p_IdNouveau INT)
BEGIN
    DECLARE v_numero VARCHAR(20);
    CALL SP_GenererNumero('COMMANDE', 1, v_numero);
    INSERT INTO tb_Commande (fkClient, NumCommande, DateCommande, Statut, MontantHT)
    SELECT p_IdClientCible, v_numero, DateCommande, Statut, MontantHT FROM tb_Commande WHERE id = p_IdSource;
    SET p_IdNouveau = LAST_INSERT_ID();
    CALL bench_curseur_lignes(p_IdSource, p_IdNouveau);
END$$

CREATE OR REPLACE PROCEDURE bench_curseur_client(IN p_IdSource INT, IN p_IdVersionCible INT, OUT p_IdNouveau INT)
BEGIN
    DECLARE v_fini    BOOLEAN DEFAULT FALSE;
    DECLARE v_id      INT;
    DECLARE v_nouveau INT;
    DECLARE v_code    VARCHAR(20);
    DECLARE c_commandes CURSOR FOR SELECT id FROM tb_Commande WHERE fkClient = p_IdSource ORDER BY id;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_fini = TRUE;

    CREATE TEMPORARY TABLE EqCommande (
        id INT AUTO_INCREMENT PRIMARY KEY, idPrev INT, idNext INT
    ) ENGINE=MEMORY;
    CALL SP_GenererNumero('CLIENT', 1, v_code);
    INSERT INTO tb_Client (fkVersion, Code, RaisonSociale, Email, Telephone)
    SELECT p_IdVersionCible, v_code, RaisonSociale, Email, Telephone FROM tb_Client WHERE id = p_IdSource;
    SET p_IdNouveau = LAST_INSERT_ID();

    OPEN c_commandes;
    boucle: LOOP
        FETCH c_commandes INTO v_id;
        IF v_fini THEN
            LEAVE boucle;
        END IF;
        CALL bench_curseur_commande(v_id, p_IdNouveau, v_nouveau);
        INSERT INTO EqCommande (idPrev, idNext) VALUES (v_id, v_nouveau);
    END LOOP;
    CLOSE c_commandes;
    DROP TEMPORARY TABLE EqCommande;
END$$

CREATE OR REPLACE PROCEDURE bench_curseur_version(IN p_IdSource INT, IN p_IdProjetCible INT, OUT p_IdNouveau INT)
BEGIN
    DECLARE v_fini    BOOLEAN DEFAULT FALSE;
    DECLARE v_id      INT;
    DECLARE v_nouveau INT;
    DECLARE c_clients CURSOR FOR SELECT id FROM tb_Client WHERE fkVersion = p_IdSource ORDER BY id;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_fini = TRUE;

    CREATE TEMPORARY TABLE EqClient (
        id INT AUTO_INCREMENT PRIMARY KEY, idPrev INT, idNext INT
    ) ENGINE=MEMORY;
    INSERT INTO tb_Version (fkProjet, NumVersion, Libelle, DateCreation)
    SELECT p_IdProjetCible, NumVersion, Libelle, DateCreation FROM tb_Version WHERE id = p_IdSource;
    SET p_IdNouveau = LAST_INSERT_ID();

    OPEN c_clients;
    boucle: LOOP
        FETCH c_clients INTO v_id;
        IF v_fini THEN
            LEAVE boucle;
        END IF;
        CALL bench_curseur_client(v_id, p_IdNouveau, v_nouveau);
        INSERT INTO EqClient (idPrev, idNext) VALUES (v_id, v_nouveau);
    END LOOP;
    CLOSE c_clients;
    DROP TEMPORARY TABLE EqClient;
END$$

CREATE OR REPLACE PROCEDURE bench_curseur_projet(IN p_IdSource INT, IN p_Utilisateur VARCHAR(50),
                                                 OUT p_IdNouveau INT, OUT p_Erreur TINYINT)
proc_main: BEGIN
    DECLARE v_fini    BOOLEAN DEFAULT FALSE;
    DECLARE v_id      INT;
    DECLARE v_nouveau INT;
    DECLARE v_numero  VARCHAR(20);
    DECLARE c_versions CURSOR FOR SELECT id FROM tb_Version WHERE fkProjet = p_IdSource ORDER BY id;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_fini = TRUE;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        ROLLBACK;
        SET p_Erreur = 1;
        RESIGNAL;
    END;

    SET p_Erreur = 0;
    IF p_IdSource IS NULL OR p_IdSource < 1 THEN
        SET p_Erreur = 1;
        LEAVE proc_main;
    END IF;

    START TRANSACTION;
    CREATE TEMPORARY TABLE EqVersion (
        id INT AUTO_INCREMENT PRIMARY KEY, idPrev INT, idNext INT
    ) ENGINE=MEMORY;
    CALL SP_GenererNumero('PROJET', 1, v_numero);
    INSERT INTO tb_Projet (NumProjet, Libelle, fkCreateur, DateCreation)
    SELECT v_numero, Libelle, fkCreateur, DateCreation FROM tb_Projet WHERE id = p_IdSource;
    SET p_IdNouveau = LAST_INSERT_ID();

    OPEN c_versions;
    boucle: LOOP
        FETCH c_versions INTO v_id;
        IF v_fini THEN
            LEAVE boucle;
        END IF;
        CALL bench_curseur_version(v_id, p_IdNouveau, v_nouveau);
        INSERT INTO EqVersion (idPrev, idNext) VALUES (v_id, v_nouveau);
    END LOOP;
    CLOSE c_versions;

    CALL SP_LogOperation('DUPLICATION_PROJET', 'tb_Projet', p_IdSource, p_IdNouveau, 'OK', 1, p_Utilisateur);
    COMMIT;
    DROP TEMPORARY TABLE EqVersion;
END proc_main$$

DELIMITER ;
