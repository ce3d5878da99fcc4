-- Aegir 3 frontend tables as Drupal 7 creates them on MySQL (hook_schema of hosting
-- 7.x-3.x and Drupal core), plus a few tables the backend never touches. Used to prove
-- that an existing hostmaster database works unchanged.
CREATE TABLE `node` (
  `nid` int(10) unsigned NOT NULL AUTO_INCREMENT, `vid` int(10) unsigned DEFAULT NULL,
  `type` varchar(32) NOT NULL DEFAULT '', `language` varchar(12) NOT NULL DEFAULT '',
  `title` varchar(255) NOT NULL DEFAULT '', `uid` int(11) NOT NULL DEFAULT 0,
  `status` int(11) NOT NULL DEFAULT 1, `created` int(11) NOT NULL DEFAULT 0,
  `changed` int(11) NOT NULL DEFAULT 0, `comment` int(11) NOT NULL DEFAULT 0,
  `promote` int(11) NOT NULL DEFAULT 0, `sticky` int(11) NOT NULL DEFAULT 0,
  `tnid` int(10) unsigned NOT NULL DEFAULT 0, `translate` int(11) NOT NULL DEFAULT 0,
  PRIMARY KEY (`nid`), UNIQUE KEY `vid` (`vid`), KEY `node_changed` (`changed`),
  KEY `node_created` (`created`), KEY `node_type` (`type`(4)), KEY `uid` (`uid`),
  KEY `tnid` (`tnid`), KEY `translate` (`translate`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `node_revision` (
  `nid` int(10) unsigned NOT NULL DEFAULT 0, `vid` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `uid` int(11) NOT NULL DEFAULT 0, `title` varchar(255) NOT NULL DEFAULT '',
  `log` longtext NOT NULL, `timestamp` int(11) NOT NULL DEFAULT 0,
  `status` int(11) NOT NULL DEFAULT 1, `comment` int(11) NOT NULL DEFAULT 0,
  `promote` int(11) NOT NULL DEFAULT 0, `sticky` int(11) NOT NULL DEFAULT 0,
  PRIMARY KEY (`vid`), KEY `nid` (`nid`), KEY `uid` (`uid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_context` (`nid` int(10) unsigned NOT NULL DEFAULT 0, `name` varchar(235) NOT NULL,
  PRIMARY KEY (`nid`), UNIQUE KEY `name` (`name`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_server` (`vid` int(10) unsigned NOT NULL DEFAULT 0, `nid` int(10) unsigned NOT NULL DEFAULT 0,
  `human_name` tinytext, `verified` int(11) NOT NULL DEFAULT 0, `status` tinyint(4) NOT NULL DEFAULT 0,
  PRIMARY KEY (`vid`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_service` (`vid` int(10) unsigned NOT NULL DEFAULT 0, `nid` int(10) unsigned NOT NULL DEFAULT 0,
  `service` tinytext NOT NULL, `type` tinytext NOT NULL, `restart_cmd` longtext,
  `port` int(10) unsigned DEFAULT 0, `available` smallint(6) NOT NULL DEFAULT 1,
  KEY `vid` (`vid`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_ip_addresses` (`nid` int(10) unsigned NOT NULL DEFAULT 0, `ip_address` tinytext NOT NULL,
  `id` int(10) unsigned NOT NULL AUTO_INCREMENT, PRIMARY KEY (`id`), KEY `nid` (`nid`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_db_server` (`vid` int(10) unsigned NOT NULL DEFAULT 0, `nid` int(10) unsigned NOT NULL DEFAULT 0,
  `db_user` longtext NOT NULL, `db_passwd` longtext NOT NULL, PRIMARY KEY (`vid`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_platform` (`vid` int(10) unsigned NOT NULL DEFAULT 0, `nid` int(10) unsigned NOT NULL DEFAULT 0,
  `publish_path` longtext, `makefile` longtext, `web_server` int(11) NOT NULL DEFAULT 0,
  `verified` int(11) NOT NULL DEFAULT 0, `status` tinyint(4) NOT NULL DEFAULT 0,
  `make_working_copy` int(10) unsigned NOT NULL DEFAULT 0, PRIMARY KEY (`vid`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_site` (`vid` int(10) unsigned NOT NULL DEFAULT 0, `nid` int(10) unsigned NOT NULL DEFAULT 0,
  `client` int(11) NOT NULL DEFAULT 0, `db_server` int(11) NOT NULL DEFAULT 0, `db_name` varchar(64) DEFAULT '',
  `platform` int(11) NOT NULL DEFAULT 0, `profile` int(11) NOT NULL DEFAULT 0,
  `language` varchar(10) NOT NULL DEFAULT 'en', `last_cron` int(11) DEFAULT NULL,
  `cron_key` varchar(80) DEFAULT '', `verified` int(11) NOT NULL DEFAULT 0,
  `status` tinyint(4) NOT NULL DEFAULT 0, PRIMARY KEY (`vid`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_site_alias` (`vid` int(11) NOT NULL DEFAULT 0, `nid` int(10) unsigned NOT NULL DEFAULT 0,
  `alias` varchar(128) NOT NULL, `automatic` int(11) NOT NULL DEFAULT 0, `redirection` varchar(255) NOT NULL,
  KEY `vid` (`vid`), KEY `alias` (`alias`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_site_backups` (`bid` int(11) NOT NULL AUTO_INCREMENT, `site` int(11) NOT NULL DEFAULT 0,
  `web_server` int(11) NOT NULL DEFAULT 0, `description` longtext, `filename` longtext, `size` bigint(20) DEFAULT NULL,
  `timestamp` int(11) DEFAULT NULL, PRIMARY KEY (`bid`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_package` (`vid` int(11) NOT NULL DEFAULT 0, `nid` int(10) unsigned NOT NULL DEFAULT 0,
  `package_type` varchar(16) NOT NULL DEFAULT '', `short_name` varchar(255) NOT NULL DEFAULT '',
  `old_short_name` varchar(255) NOT NULL DEFAULT '', `description` longtext NOT NULL,
  PRIMARY KEY (`vid`), KEY `hosting_package_nid_idx` (`nid`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_package_instance` (`iid` int(11) NOT NULL AUTO_INCREMENT, `rid` int(11) NOT NULL DEFAULT 0,
  `package_id` int(11) NOT NULL DEFAULT 0, `filename` text NOT NULL, `schema_version` int(11) NOT NULL DEFAULT 0,
  `version` varchar(255) NOT NULL DEFAULT '', `version_code` bigint(20) NOT NULL DEFAULT 0,
  `status` int(11) NOT NULL DEFAULT 0, `platform` int(11) NOT NULL DEFAULT 0, PRIMARY KEY (`iid`),
  KEY `hosting_package_rid_idx` (`rid`), KEY `hosting_package_id_idx` (`package_id`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
-- hosting_package_schema(): no primary key, iid without a default.
CREATE TABLE `hosting_package_languages` (`iid` int(11) NOT NULL, `language` varchar(12) NOT NULL DEFAULT '') ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_client` (`vid` int(10) unsigned NOT NULL DEFAULT 0, `nid` int(10) unsigned NOT NULL DEFAULT 0,
  `uname` varchar(255) NOT NULL DEFAULT '', PRIMARY KEY (`vid`), UNIQUE KEY `uname_unq` (`uname`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_task` (`vid` int(10) unsigned NOT NULL DEFAULT 0, `nid` int(10) unsigned NOT NULL DEFAULT 0,
  `task_type` longtext, `rid` int(11) NOT NULL DEFAULT 0, `task_status` int(11) DEFAULT NULL,
  `executed` int(11) DEFAULT NULL, `delta` int(11) DEFAULT NULL, PRIMARY KEY (`vid`), KEY `nid` (`nid`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_task_arguments` (`vid` int(10) unsigned NOT NULL DEFAULT 0, `nid` int(10) unsigned NOT NULL DEFAULT 0,
  `name` longtext, `value` longtext, KEY `vid` (`vid`), KEY `nid` (`nid`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `hosting_task_log` (`lid` int(11) NOT NULL AUTO_INCREMENT, `vid` int(11) NOT NULL DEFAULT 0,
  `nid` int(10) unsigned NOT NULL DEFAULT 0, `type` varchar(16) NOT NULL DEFAULT '', `message` longtext NOT NULL,
  `error` longtext NOT NULL, `timestamp` int(11) NOT NULL DEFAULT 0, PRIMARY KEY (`lid`), KEY `type` (`type`),
  KEY `vid_lid` (`vid`,`lid`), KEY `nid` (`nid`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `variable` (`name` varchar(128) NOT NULL DEFAULT '', `value` longblob NOT NULL, PRIMARY KEY (`name`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `semaphore` (`name` varchar(255) NOT NULL DEFAULT '', `value` varchar(255) NOT NULL DEFAULT '',
  `expire` double NOT NULL, PRIMARY KEY (`name`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
-- A hostmaster with its master server, its own platform and the hostmaster site.
INSERT INTO node VALUES (1,1,'server','','master.example.net',1,1,1700000000,1700000000,0,0,0,0,0),
  (2,2,'platform','','hostmaster',1,1,1700000000,1700000000,0,0,0,0,0),
  (3,3,'package','','Hostmaster',1,1,1700000000,1700000000,0,0,0,0,0),
  (4,4,'site','','aegir.example.net',1,1,1700000000,1700000000,0,0,0,0,0);
INSERT INTO node_revision VALUES (1,1,1,'master.example.net','',1700000000,1,0,0,0),
  (2,2,1,'hostmaster','',1700000000,1,0,0,0),(3,3,1,'Hostmaster','',1700000000,1,0,0,0),
  (4,4,1,'aegir.example.net','',1700000000,1,0,0,0);
INSERT INTO hosting_context VALUES (1,'server_master'),(2,'platform_hostmaster'),(4,'hostmaster');
INSERT INTO hosting_server VALUES (1,1,'master.example.net',1700000000,1);
INSERT INTO hosting_service VALUES (1,1,'http','nginx','sudo /etc/init.d/nginx reload',80,1),(1,1,'db','mysql',NULL,3306,1);
INSERT INTO hosting_db_server VALUES (1,1,'aegir_root','hostmaster-secret');
INSERT INTO hosting_platform VALUES (2,2,'/var/aegir/hostmaster-7.x-3.x','',1,1700000000,-1,0);
INSERT INTO hosting_package VALUES (3,3,'profile','hostmaster','','');
INSERT INTO hosting_site VALUES (4,4,0,1,'aegirexamplenet',2,3,'en',NULL,'k3y',1700000000,1);
INSERT INTO variable VALUES ('hosting_queued_paused', 'i:0;');
