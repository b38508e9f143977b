-- Benchmark only: the duplication written the way the specification describes it (seed 002),
-- for comparison with erpsync's set-based SP_DupliquerProjet. Not shipped, not for production.
--
-- One loop turn (an implicit cursor) and one CALL per version, client and commande; each
-- procedure creates its mapping table (EqVersion, EqClient, EqCommande; PostgreSQL has no
-- MEMORY engine, so a temporary table) and drops it at the end; a new number is drawn with
-- SP_GenererNumero(…, 1, …) for each copied projet, client and commande; the lines of a
-- commande are copied in one INSERT … SELECT per commande. The CALL is the transaction. Needs
-- erpsync's procedures (SP_GenererNumero, SP_LogOperation) installed first.

CREATE OR REPLACE PROCEDURE bench_curseur_lignes(p_IdCommandeSource INTEGER, p_IdCommandeCible INTEGER)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tb_LigneCommande (fkCommande, NumLigne, Reference, Designation, Quantite, PrixUnitaire)
    SELECT p_IdCommandeCible, l.NumLigne, l.Reference, l.Designation, l.Quantite, l.PrixUnitaire
    FROM tb_LigneCommande l
    WHERE l.fkCommande = p_IdCommandeSource;
END
$$;

CREATE OR REPLACE PROCEDURE bench_curseur_commande(
    p_IdSource INTEGER, p_IdClientCible INTEGER, INOUT p_IdNouveau INTEGER DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_numero VARCHAR;
BEGIN
    CALL SP_GenererNumero('COMMANDE', 1, v_numero);
    INSERT INTO tb_Commande (fkClient, NumCommande, DateCommande, Statut, MontantHT)
    SELECT p_IdClientCible, v_numero, c.DateCommande, c.Statut, c.MontantHT FROM tb_Commande c WHERE c.id = p_IdSource
    RETURNING id INTO p_IdNouveau;
    CALL bench_curseur_lignes(p_IdSource, p_IdNouveau);
END
$$;

CREATE OR REPLACE PROCEDURE bench_curseur_client(
    p_IdSource INTEGER, p_IdVersionCible INTEGER, INOUT p_IdNouveau INTEGER DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_code    VARCHAR;
    v_nouveau INTEGER;
    r         RECORD;
BEGIN
    CREATE TEMPORARY TABLE EqCommande (id SERIAL PRIMARY KEY, idPrev INTEGER, idNext INTEGER);
    CALL SP_GenererNumero('CLIENT', 1, v_code);
    INSERT INTO tb_Client (fkVersion, Code, RaisonSociale, Email, Telephone)
    SELECT p_IdVersionCible, v_code, c.RaisonSociale, c.Email, c.Telephone FROM tb_Client c WHERE c.id = p_IdSource
    RETURNING id INTO p_IdNouveau;
    FOR r IN SELECT c.id FROM tb_Commande c WHERE c.fkClient = p_IdSource ORDER BY c.id LOOP
        CALL bench_curseur_commande(r.id, p_IdNouveau, v_nouveau);
        INSERT INTO EqCommande (idPrev, idNext) VALUES (r.id, v_nouveau);
    END LOOP;
    DROP TABLE EqCommande;
END
$$;

CREATE OR REPLACE PROCEDURE bench_curseur_version(
    p_IdSource INTEGER, p_IdProjetCible INTEGER, INOUT p_IdNouveau INTEGER DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_nouveau INTEGER;
    r         RECORD;
BEGIN
    CREATE TEMPORARY TABLE EqClient (id SERIAL PRIMARY KEY, idPrev INTEGER, idNext INTEGER);
    INSERT INTO tb_Version (fkProjet, NumVersion, Libelle, DateCreation)
    SELECT p_IdProjetCible, v.NumVersion, v.Libelle, v.DateCreation FROM tb_Version v WHERE v.id = p_IdSource
    RETURNING id INTO p_IdNouveau;
    FOR r IN SELECT c.id FROM tb_Client c WHERE c.fkVersion = p_IdSource ORDER BY c.id LOOP
        CALL bench_curseur_client(r.id, p_IdNouveau, v_nouveau);
        INSERT INTO EqClient (idPrev, idNext) VALUES (r.id, v_nouveau);
    END LOOP;
    DROP TABLE EqClient;
END
$$;

CREATE OR REPLACE PROCEDURE bench_curseur_projet(
    p_IdSource INTEGER, p_Utilisateur VARCHAR,
    INOUT p_IdNouveau INTEGER DEFAULT NULL, INOUT p_Erreur INTEGER DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_numero  VARCHAR;
    v_nouveau INTEGER;
    r         RECORD;
BEGIN
    p_Erreur := 0;
    IF p_IdSource IS NULL OR p_IdSource < 1 THEN
        p_Erreur := 1;
        RETURN;
    END IF;
    CREATE TEMPORARY TABLE EqVersion (id SERIAL PRIMARY KEY, idPrev INTEGER, idNext INTEGER);
    CALL SP_GenererNumero('PROJET', 1, v_numero);
    INSERT INTO tb_Projet (NumProjet, Libelle, fkCreateur, DateCreation)
    SELECT v_numero, p.Libelle, p.fkCreateur, p.DateCreation FROM tb_Projet p WHERE p.id = p_IdSource
    RETURNING id INTO p_IdNouveau;
    FOR r IN SELECT v.id FROM tb_Version v WHERE v.fkProjet = p_IdSource ORDER BY v.id LOOP
        CALL bench_curseur_version(r.id, p_IdNouveau, v_nouveau);
        INSERT INTO EqVersion (idPrev, idNext) VALUES (r.id, v_nouveau);
    END LOOP;
    DROP TABLE EqVersion;
    CALL SP_LogOperation('DUPLICATION_PROJET', 'tb_Projet', p_IdSource, p_IdNouveau, 'OK', 1, p_Utilisateur);
END
$$;
