"""French and English messages for the CLI and the library's errors.

English strings are the message ids (as with gettext): code writes
``tr("Database {name} created.", name="erp")`` and gets French when the language is French.
The language comes from ``set_language`` (the CLI's ``--lang``) or from the
``LANG`` / ``LC_ALL`` environment variables, as users on Windows and Linux
expect.
"""

from __future__ import annotations

import os

_language: str | None = None

FRENCH: dict[str, str] = {
    # CLI frame
    "Error: {message}": "Erreur : {message}",
    "Try: {hint}": "Essayez : {hint}",
    "Interrupted.": "Interrompu.",
    # database opening
    "{url} is not a database URL or a file path: {reason}": "{url} n'est ni une URL de base de données ni un chemin de fichier : {reason}",
    "write sqlite:///path/to/file.db, a plain file path, mysql+pymysql://user:password@host/db "
    "or postgresql+psycopg://user@host/db": "écrivez sqlite:///chemin/vers/fichier.db, un simple chemin de fichier, "
    "mysql+pymysql://utilisateur:motdepasse@hôte/base ou postgresql+psycopg://utilisateur@hôte/base",
    "erpsync does not support {scheme} databases": "erpsync ne prend pas en charge les bases {scheme}",
    "use SQLite, MariaDB (mysql+pymysql://…) or PostgreSQL (postgresql+psycopg://…)": "utilisez SQLite, MariaDB (mysql+pymysql://…) ou PostgreSQL (postgresql+psycopg://…)",
    "the URL names no database": "l'URL ne nomme aucune base",
    "add the database name at the end of the URL, e.g. {example}": "ajoutez le nom de la base à la fin de l'URL, par exemple {example}",
    "SQLite database file {path} does not exist": "le fichier de base SQLite {path} n'existe pas",
    "check the path, or create the database with: erpsync db init {path}": "vérifiez le chemin, ou créez la base avec : erpsync db init {path}",
    "folder {path} does not exist": "le dossier {path} n'existe pas",
    "create the folder first, or choose another path": "créez d'abord le dossier, ou choisissez un autre chemin",
    "cannot open SQLite database {path}: {reason}": "impossible d'ouvrir la base SQLite {path} : {reason}",
    "check that the file is a SQLite database and that you may read and write it": "vérifiez que le fichier est une base SQLite et que vous pouvez le lire et l'écrire",
    "cannot reach the {engine} server at {address}: {reason}": "impossible de joindre le serveur {engine} à {address} : {reason}",
    "check the host and port, and that the server is running": "vérifiez l'hôte et le port, et que le serveur est démarré",
    "{engine} refused the login of user {user}: {reason}": "{engine} a refusé la connexion de l'utilisateur {user} : {reason}",
    "check the user name and password in the URL": "vérifiez le nom d'utilisateur et le mot de passe dans l'URL",
    "database {name} does not exist on the {engine} server at {address}": "la base {name} n'existe pas sur le serveur {engine} à {address}",
    "check the name, or create it with: erpsync db init {url} --create-database": "vérifiez le nom, ou créez-la avec : erpsync db init {url} --create-database",
    "{engine} error: {reason}": "erreur {engine} : {reason}",
    "run again with --debug to see the SQL and the traceback": "relancez avec --debug pour voir le SQL et la trace",
    "the driver for {engine} is not installed ({reason})": "le pilote pour {engine} n'est pas installé ({reason})",
    "reinstall erpsync: pip install --force-reinstall erpsync": "réinstallez erpsync : pip install --force-reinstall erpsync",
    # schema
    "the database already holds {tables} with another shape: {differences}": "la base contient déjà {tables} sous une autre forme : {differences}",
    "use an empty database, or rename or drop these tables; nothing was changed": "utilisez une base vide, ou renommez ou supprimez ces tables ; rien n'a été modifié",
    "the ERP schema is missing tables: {tables}": "il manque des tables au schéma ERP : {tables}",
    "create them with: erpsync db init {url}": "créez-les avec : erpsync db init {url}",
    "{table}: missing column {column}": "{table} : colonne {column} manquante",
    "{table}: unexpected column {column}": "{table} : colonne {column} inattendue",
    "{table}.{column} is {actual}, expected {expected}": "{table}.{column} est {actual}, attendu {expected}",
    "{table}.{column} may be NULL, expected NOT NULL": "{table}.{column} accepte NULL, attendu NOT NULL",
    "{table}.{column} is NOT NULL, expected NULL allowed": "{table}.{column} est NOT NULL, attendu NULL permis",
    "{table}: primary key is ({actual}), expected ({expected})": "{table} : la clé primaire est ({actual}), attendu ({expected})",
    # fill
    "--scale must be 0 or more, not {scale}": "--scale doit valoir 0 ou plus, pas {scale}",
    "--big-project must be 0 or more, not {lines}": "--big-project doit valoir 0 ou plus, pas {lines}",
    "give a whole number, e.g. --scale 1": "donnez un nombre entier, par exemple --scale 1",
    # CLI output
    "Schema created on {db}: {tables}.": "Schéma créé sur {db} : {tables}.",
    "Schema already in place on {db}; nothing to do.": "Schéma déjà en place sur {db} ; rien à faire.",
    "Created missing tables on {db}: {tables}.": "Tables manquantes créées sur {db} : {tables}.",
    "Database {name} created.": "Base {name} créée.",
    "Filled {db} in {seconds:.1f} s.": "{db} rempli en {seconds:.1f} s.",
    "Contents of {db}": "Contenu de {db}",
    "Table": "Table",
    "Rows": "Lignes",
    "Total excl. tax (sum of MontantHT)": "Total HT (somme des MontantHT)",
    "Connected to {engine} {version} at {db}.": "Connecté à {engine} {version} sur {db}.",
    "Foreign keys: {n} broken references.": "Clés étrangères : {n} références cassées.",
    "Checks of {db}": "Contrôles de {db}",
    "Check": "Contrôle",
    "Problems": "Problèmes",
    "Result": "Résultat",
    "ok": "ok",
    "FAILED": "ÉCHEC",
    "{n} problems found in {db}.": "{n} problèmes trouvés dans {db}.",
    "look at the failed checks above": "regardez les contrôles en échec ci-dessus",
    "Inserting": "Insertion",
    # duplication (issue 3)
    "number format {template!r} must contain {{n}} once (e.g. {{n:05d}}) and may contain {{annee}}": "le format de numéro {template!r} doit contenir {{n}} une fois (par exemple {{n:05d}}) et peut contenir {{annee}}",
    "write a format such as PRJ-{{annee}}-{{n:05d}} or CLI-{{n:03d}}": "écrivez un format comme PRJ-{{annee}}-{{n:05d}} ou CLI-{{n:03d}}",
    "the database has no table {table}": "la base n'a pas de table {table}",
    "create the ERP schema with: erpsync db init DB": "créez le schéma ERP avec : erpsync db init DB",
    "edge {edge} has mode {mode!r}; use deep, shallow or skip": "le lien {edge} a le mode {mode!r} ; utilisez deep, shallow ou skip",
    "{table} cannot be duplicated: other copied tables refer to it, and its primary key is not a single integer column": "{table} ne peut pas être dupliquée : d'autres tables copiées y font référence, et sa clé primaire n'est pas une seule colonne entière",
    "exclude the tables that refer to it with --edge TABLE=skip": "excluez les tables qui y font référence avec --edge TABLE=skip",
    "{table} cannot be duplicated: its unique column {column} would be copied as is": "{table} ne peut pas être dupliquée : sa colonne unique {column} serait copiée telle quelle",
    "skip this table with --edge {table}=skip": "ignorez cette table avec --edge {table}=skip",
    "run {run} did not copy {table} row {id}": "l'exécution {run} n'a pas copié la ligne {id} de {table}",
    "list what a run copied with: erpsync duplicate runs DB": "listez les exécutions avec : erpsync duplicate runs DB",
    "run {run} was already undone": "l'exécution {run} a déjà été annulée",
    "list runs with: erpsync duplicate runs DB": "listez les exécutions avec : erpsync duplicate runs DB",
    "run {run} has no recorded steps (it was made by a stored procedure)": "l'exécution {run} n'a pas d'étapes enregistrées (elle vient d'une procédure stockée)",
    "delete its rows by hand, using: erpsync duplicate map DB {run} TABLE OLD_ID": "supprimez ses lignes à la main, à l'aide de : erpsync duplicate map DB {run} TABLE ANCIEN_ID",
    "the copies made by run {run} changed since in {tables}; nothing was deleted": "les copies faites par l'exécution {run} ont changé depuis dans {tables} ; rien n'a été supprimé",
    "check them, then undo anyway with --force": "vérifiez-les, puis annulez quand même avec --force",
    "no duplication run {run}": "aucune exécution de duplication {run}",
    "unknown level {level!r}": "niveau inconnu {level!r}",
    "use one of: {levels}": "utilisez l'un de : {levels}",
    "--into {id}: a projet has no parent": "--into {id} : un projet n'a pas de parent",
    "duplicate a version, client or commande to put it under another parent": "dupliquez une version, un client ou une commande pour la placer sous un autre parent",
    "{table} id {id} is not valid: ids are whole numbers from 1": "l'id {id} de {table} n'est pas valide : les id sont des entiers à partir de 1",
    "give the id of an existing {table} row": "donnez l'id d'une ligne existante de {table}",
    "--into {id}: there is no {table} row with id {id}": "--into {id} : aucune ligne de {table} n'a l'id {id}",
    "a {level} goes under a {table}: give the id of an existing one": "un(e) {level} se place sous une ligne de {table} : donnez l'id d'une ligne existante",
    "there is no {table} row with id {id}": "aucune ligne de {table} n'a l'id {id}",
    "check the id, e.g. with: erpsync db summary DB": "vérifiez l'id, par exemple avec : erpsync db summary DB",
    "{option} {value!r} is not of the form NAME=VALUE": "{option} {value!r} n'est pas de la forme NOM=VALEUR",
    "e.g. {option} tb_LigneCommande=skip": "par exemple {option} tb_LigneCommande=skip",
    "unknown number type {kind!r}": "type de numéro inconnu {kind!r}",
    "use PROJET, CLIENT or COMMANDE": "utilisez PROJET, CLIENT ou COMMANDE",
    "Dry run of the copy of {level} {id}": "Simulation de la copie de {level} {id}",
    "Copy of {level} {id}": "Copie de {level} {id}",
    "New numbers": "Nouveaux numéros",
    "Dry run: nothing was written.": "Simulation : rien n'a été écrit.",
    "Run {run}: {level} {id} copied as {new_id} in {seconds:.2f} s.": "Exécution {run} : {level} {id} copié(e) en {new_id} en {seconds:.2f} s.",
    "Undo of run {run}": "Annulation de l'exécution {run}",
    "Rows deleted": "Lignes supprimées",
    "Duplication runs of {db}": "Exécutions de duplication de {db}",
    "Run": "Exécution",
    "When": "Quand",
    "Level": "Niveau",
    "Source": "Source",
    "Copy": "Copie",
    "User": "Utilisateur",
    "Status": "État",
    "done": "faite",
    "undone": "annulée",
    # export and import (issue 7)
    "unknown export format {fmt!r}": "format d'export inconnu {fmt!r}",
    "use jsonl or csv": "utilisez jsonl ou csv",
    "{path} is not empty": "{path} n'est pas vide",
    "export into a new or empty folder": "exportez dans un dossier nouveau ou vide",
    "{path} is not an erpsync export: it has no manifest.json": "{path} n'est pas un export erpsync : il n'a pas de manifest.json",
    "give the folder written by: erpsync export DB FOLDER": "donnez le dossier écrit par : erpsync export DB DOSSIER",
    "the manifest of {path} is damaged: {reason}": "le manifeste de {path} est endommagé : {reason}",
    "export the data again": "exportez à nouveau les données",
    "{file} is missing, truncated or damaged (its checksum differs from the manifest); nothing was imported": "{file} est absent, tronqué ou endommagé (sa somme de contrôle diffère du manifeste) ; rien n'a été importé",
    "unknown import mode {mode!r}": "mode d'import inconnu {mode!r}",
    "use replace or merge": "utilisez replace ou merge",
    "the export does not match the database: {differences}": "l'export ne correspond pas à la base : {differences}",
    "import into a database with the same schema (erpsync db init creates the ERP schema); nothing was imported": "importez dans une base de même schéma (erpsync db init crée le schéma ERP) ; rien n'a été importé",
    "Export of {db} into {folder}": "Export de {db} dans {folder}",
    "File": "Fichier",
    "Import of {folder} into {db} ({mode})": "Import de {folder} dans {db} ({mode})",
    "Rows added": "Lignes ajoutées",
    "Already there": "Déjà présentes",
    "Different, kept as they are": "Différentes, gardées telles quelles",
    "{table}: rows that differ (ids): {ids}": "{table} : lignes différentes (id) : {ids}",
    # backups (issue 7)
    "no backup at {path}": "aucune sauvegarde à {path}",
    "list backups with: erpsync backup list DB": "listez les sauvegardes avec : erpsync backup list DB",
    "the manifest {path} is damaged: {reason}": "le manifeste {path} est endommagé : {reason}",
    "use another backup": "utilisez une autre sauvegarde",
    "backup {file} is missing, truncated or damaged: its checksum differs from its manifest": "la sauvegarde {file} est absente, tronquée ou endommagée : sa somme de contrôle diffère de son manifeste",
    "backup {file} does not hold the rows its manifest lists": "la sauvegarde {file} ne contient pas les lignes que liste son manifeste",
    "backup {file} is damaged: {reason}": "la sauvegarde {file} est endommagée : {reason}",
    "pg_restore is not installed": "pg_restore n'est pas installé",
    "install the PostgreSQL client tools": "installez les outils clients de PostgreSQL",
    "backup {file} cannot be read: {reason}": "la sauvegarde {file} est illisible : {reason}",
    "backup {file} is of a {engine} database; it cannot be restored into {target}": "la sauvegarde {file} vient d'une base {engine} ; elle ne peut pas être restaurée dans {target}",
    "restore it into a database of the same engine": "restaurez-la dans une base du même moteur",
    "backup {file} was taken with another schema than {db} has now; nothing was restored": "la sauvegarde {file} a été prise avec un autre schéma que celui de {db} ; rien n'a été restauré",
    "restore it anyway with --force": "restaurez-la quand même avec --force",
    "the restored database does not hold the rows of backup {file}; the state before the restore is in {before}": "la base restaurée ne contient pas les lignes de la sauvegarde {file} ; l'état d'avant la restauration est dans {before}",
    "restore {before} to go back": "restaurez {before} pour revenir en arrière",
    "{tool} failed: {reason}": "{tool} a échoué : {reason}",
    "run again with --debug, or check the server": "relancez avec --debug, ou vérifiez le serveur",
    "Backup {file} made ({method}, {rows:,} rows).": "Sauvegarde {file} faite ({method}, {rows:,} lignes).",
    "Backups in {folder}": "Sauvegardes dans {folder}",
    "Method": "Méthode",
    "Reason": "Motif",
    "manual": "manuelle",
    "before restore": "avant restauration",
    "before sync": "avant synchronisation",
    "Backup {file} is intact: {rows:,} rows in {tables} tables, as its manifest says.": "La sauvegarde {file} est intacte : {rows:,} lignes dans {tables} tables, comme l'indique son manifeste.",
    "Restored {db} from {file}; its previous state is in {before}.": "{db} restaurée depuis {file} ; son état précédent est dans {before}.",
    # configuration (issue 6)
    "no peer {name} in the configuration": "aucun pair {name} dans la configuration",
    "the peers are: {names}": "les pairs sont : {names}",
    "no configuration file {path}": "aucun fichier de configuration {path}",
    "write one with: erpsync config init {path}": "écrivez-en un avec : erpsync config init {path}",
    "{path} is not valid TOML: {reason}": "{path} n'est pas du TOML valide : {reason}",
    "fix the line it names": "corrigez la ligne indiquée",
    "{path} has {count} wrong fields: {problems}": "{path} a {count} champs incorrects : {problems}",
    "fix them; erpsync config init writes a commented example": "corrigez-les ; erpsync config init écrit un exemple commenté",
    "{path} already exists": "{path} existe déjà",
    "choose another path, or overwrite it with --force": "choisissez un autre chemin, ou écrasez-le avec --force",
    "no file {path}": "aucun fichier {path}",
    "give the path of network_config.json or erp_launcher_config.json": "donnez le chemin de network_config.json ou erp_launcher_config.json",
    "{path} is not valid JSON: {reason}": "{path} n'est pas du JSON valide : {reason}",
    "check the file": "vérifiez le fichier",
    "{path} is not an old erpsync configuration": "{path} n'est pas une ancienne configuration de synchronisation",
    "Wrote {path}: edit it, then check it with: erpsync config check {path}": "{path} écrit : modifiez-le, puis vérifiez-le avec : erpsync config check {path}",
    "{path} is valid: node {name} on {db}, {peers} peers, a sync every {interval} s.": "{path} est valide : nœud {name} sur {db}, {peers} pairs, une synchronisation toutes les {interval} s.",
    " (environment variable {var} is not set)": " (la variable d'environnement {var} n'est pas définie)",
    "Wrote {path} from {legacy}: {peers} peers, a sync every {interval} s.": "{path} écrit depuis {legacy} : {peers} pairs, une synchronisation toutes les {interval} s.",
    # stored procedures (issue 4)
    "SQLite has no stored procedures, so SP_DupliquerProjet and the others cannot be installed": "SQLite n'a pas de procédures stockées : SP_DupliquerProjet et les autres ne peuvent pas y être installées",
    "duplicate from erpsync instead, e.g. erpsync duplicate DB projet 7 (same copy, same journal)": "dupliquez plutôt avec erpsync, par exemple erpsync duplicate DB projet 7 (même copie, même journal)",
    "the procedures need MariaDB {minimum} or later; this server is {version}": "les procédures demandent MariaDB {minimum} ou plus récent ; ce serveur est {version}",
    "use erpsync duplicate, which works on any MariaDB or MySQL server": "utilisez erpsync duplicate, qui fonctionne sur tout serveur MariaDB ou MySQL",
    "Installed {n} procedures on {db}: {names}.": "{n} procédures installées sur {db} : {names}.",
    "Removed the procedures from {db}.": "Procédures supprimées de {db}.",
}


def set_language(lang: str | None) -> None:
    """Choose the language of messages ('fr' or 'en'); None means from the environment."""
    global _language
    _language = None if lang is None else lang.lower()[:2]


def language() -> str:
    """The language in force: the one set, else the one of LC_ALL/LANG, else English."""
    if _language:
        return _language
    for var in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        value = os.environ.get(var, "")
        if value:
            return "fr" if value.lower().startswith("fr") else "en"
    return "en"


def tr(message: str, /, **params: object) -> str:
    """The message in the current language, with its ``{placeholders}`` filled in."""
    template = FRENCH.get(message, message) if language() == "fr" else message
    return template.format(**params) if params else template
