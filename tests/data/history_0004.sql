INSERT INTO stream_cursors (group_key, stream, sport, leagues) VALUES ('copilot:basketball:NBA', 'copilot', 'basketball', '{NBA}');
INSERT INTO odds (id, stream, fixture_id, status, source_ts, entry_id, order_key, price)
VALUES ('a', 'copilot', 'F1', 'settled', now(), '1-0', '\x00', -110), ('b', 'copilot', 'F1', 'open', now(), '1-0', '\x00', 1.91);
INSERT INTO odds_history (id, kind, stream, fixture_id, price, points, is_main, status, settlement, settled_at, source_ts, entry_id, event_id, group_key, received_at) VALUES
 ('a','odds','copilot','F1',-110,104.5,true,'open',NULL,NULL,'2026-11-29 10:00:00+00','1764410400000-0','1764410400001-3','copilot:basketball:NBA','2026-11-29 10:00:00.123456+00'),
 ('b','odds','copilot','F1',1.91,NULL,false,'open',NULL,NULL,'2026-11-29 10:00:00+00','1764410400000-0','1764410400001-3','copilot:basketball:NBA','2026-11-29 10:00:00.123456+00'),
 ('a','locked','copilot','F1',-115,104.5,NULL,'locked',NULL,NULL,'2026-11-29 10:01:00+00','1764410460000-2','1764410460000-2','copilot:basketball:NBA','2026-11-29 10:01:00.5+00'),
 ('a','settled','copilot','F1',NULL,NULL,NULL,'settled','Half Won','2026-11-29 12:00:00+00','2026-11-29 12:00:00+00','1764417600000-0','x-custom','copilot:basketball:NBA','2026-11-29 12:00:01+00'),
 ('b','odds','copilot','F1',0.5238095238095238,2.25,true,'open',NULL,NULL,'2026-11-29 09:00:00+00','1764406800000-0','snapshot','copilot:basketball:NBA','2026-11-29 12:00:01+00'),
 ('b','odds','copilot','F1',1.95,NULL,true,'open',NULL,NULL,'2026-11-29 09:30:00+00','1764408600000-0','snapshot','copilot:basketball:NBA','2026-11-29 12:00:01+00'),
 ('b','locked','copilot','F1',1.95,NULL,true,'locked',NULL,NULL,'2026-11-29 09:31:00+00','0123-5','','old:group','2026-11-29 12:00:02+00');
