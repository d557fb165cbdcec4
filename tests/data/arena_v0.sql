-- arena database at schema 0001_initial (arena 0.1, before 0002_search), made with sqlite3 .iterdump().
-- Frozen test input for tests/test_migrations.py: never regenerate it from newer code.
BEGIN TRANSACTION;
CREATE TABLE arena_alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT arena_alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO "arena_alembic_version" VALUES('0001_initial');
CREATE TABLE arena_champion_decisions (
	id INTEGER NOT NULL, 
	spec_hash VARCHAR(64) NOT NULL, 
	decided_at DATETIME NOT NULL, 
	challenger_name VARCHAR(200) NOT NULL, 
	challenger_sha VARCHAR(64) NOT NULL, 
	challenger_hparams_json TEXT NOT NULL, 
	champion_name VARCHAR(200), 
	champion_sha VARCHAR(64), 
	champion_hparams_json TEXT, 
	promoted BOOLEAN NOT NULL, 
	by_default BOOLEAN NOT NULL, 
	reason TEXT NOT NULL, 
	evidence_json TEXT NOT NULL, 
	CONSTRAINT pk_arena_champion_decisions PRIMARY KEY (id)
);
INSERT INTO "arena_champion_decisions" VALUES(1,'862589a026574e98','2026-01-15 12:10:00.000000','gf','1111111111111111111111111111111111111111111111111111111111111111','{}',NULL,NULL,NULL,0,1,'reference variant is champion by default','{}');
CREATE TABLE arena_runs (
	id INTEGER NOT NULL, 
	"key" VARCHAR(64) NOT NULL, 
	variant_sha VARCHAR(64) NOT NULL, 
	variant_name VARCHAR(200) NOT NULL, 
	spec_hash VARCHAR(64) NOT NULL, 
	seed INTEGER NOT NULL, 
	hparams_json TEXT NOT NULL, 
	hparams_key TEXT NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	final_val_loss FLOAT, 
	metrics_json TEXT NOT NULL, 
	error TEXT, 
	created DATETIME NOT NULL, 
	wall_s FLOAT, 
	CONSTRAINT pk_arena_runs PRIMARY KEY (id), 
	CONSTRAINT uq_arena_runs_key UNIQUE ("key")
);
INSERT INTO "arena_runs" VALUES(1,'f0346a838798b1cb017191a0','1111111111111111111111111111111111111111111111111111111111111111','gf','862589a026574e98',0,'{"lr_mult": 1.0}','{"lr_mult":1.0}','ok',2.51,'{"backend": {}, "checkpoint_path": null, "diagnostics": [], "env": {}, "final_val_acc": null, "final_val_bpc": null, "params_by_part": {}, "params_total": 59000, "peak_mem_mb": null, "steps_done": 40, "tokens_per_s": null, "train_curve": [], "val_curve": [[10, 3.0], [40, 2.51]], "warmup_s": null}',NULL,'2026-01-15 12:01:00.000000',4.5);
INSERT INTO "arena_runs" VALUES(2,'354bde7787ac2a16861f731c','1111111111111111111111111111111111111111111111111111111111111111','gf','862589a026574e98',1,'{"lr_mult": 1.0}','{"lr_mult":1.0}','ok',2.49,'{"backend": {}, "checkpoint_path": null, "diagnostics": [], "env": {}, "final_val_acc": null, "final_val_bpc": null, "params_by_part": {}, "params_total": 59000, "peak_mem_mb": null, "steps_done": 40, "tokens_per_s": null, "train_curve": [], "val_curve": [[10, 3.0], [40, 2.49]], "warmup_s": null}',NULL,'2026-01-15 12:02:00.000000',4.5);
INSERT INTO "arena_runs" VALUES(3,'36101e436e79c48ff0801dc7','2222222222222222222222222222222222222222222222222222222222222222','gf_mh','862589a026574e98',0,'{"lr_mult": 1.0}','{"lr_mult":1.0}','crashed',NULL,'{"backend": {}, "checkpoint_path": null, "diagnostics": [], "env": {}, "final_val_acc": null, "final_val_bpc": null, "params_by_part": {}, "params_total": 59000, "peak_mem_mb": null, "steps_done": 3, "tokens_per_s": null, "train_curve": [], "val_curve": [], "warmup_s": null}','RuntimeError: boom','2026-01-15 12:03:00.000000',4.5);
CREATE TABLE arena_specs (
	hash VARCHAR(64) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	json TEXT NOT NULL, 
	created DATETIME NOT NULL, 
	CONSTRAINT pk_arena_specs PRIMARY KEY (hash)
);
INSERT INTO "arena_specs" VALUES('862589a026574e98','smoke','{"batch_size": 8, "beta1": 0.9, "beta2": 0.95, "data_sha256": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", "dims": {"attn_heads": 2, "d_model": 32, "ffn_mult": 4, "mamba_chunk": 16, "mamba_d_conv": 4, "mamba_d_state": 16, "mamba_expand": 2, "mamba_head_dim": 16, "mamba_n_groups": 1, "n_layer": 2, "rwkv_decay_rank": 16, "rwkv_expand_k": 0.5, "rwkv_expand_v": 1.0, "rwkv_heads": 2, "rwkv_init": "fla", "rwkv_mix_rank": 8, "vocab_size": 65}, "eval_batches": 4, "eval_every": 10, "final_eval_batches": 16, "grad_clip": 1.0, "lr": 0.003, "lr_schedule": "cosine", "max_seeds": 6, "min_lr_ratio": 0.1, "mqar_kv_pairs": 8, "mqar_train_examples": 20000, "mqar_val_examples": 1000, "mqar_vocab": 128, "name": "smoke", "param_budget": 80000, "precision": "fp32", "protocol_version": 1, "reference_variant": "gf", "seeds": [0, 1, 2], "seq_len": 32, "steps": 40, "track": "shakespeare", "tuning_seeds": [1000], "val_fraction": 0.1, "warmup_steps": 8, "weight_decay": 0.1}','2026-01-15 12:00:00.000000');
CREATE TABLE arena_variants (
	sha256 VARCHAR(64) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	kind VARCHAR(100) NOT NULL, 
	summary TEXT NOT NULL, 
	source TEXT NOT NULL, 
	path TEXT NOT NULL, 
	first_seen DATETIME NOT NULL, 
	CONSTRAINT pk_arena_variants PRIMARY KEY (sha256)
);
INSERT INTO "arena_variants" VALUES('1111111111111111111111111111111111111111111111111111111111111111','gf','ratio','GRU-style fused gate','VARIANT = ''gf v1''
','variants/gf.py','2026-01-15 12:00:00.000000');
INSERT INTO "arena_variants" VALUES('2222222222222222222222222222222222222222222222222222222222222222','gf_mh','ratio','multi-head gate','VARIANT = ''gf_mh v1''
','variants/gf_mh.py','2026-01-15 12:00:01.000000');
CREATE INDEX ix_arena_variants_name ON arena_variants (name);
CREATE INDEX ix_arena_runs_spec_variant ON arena_runs (spec_hash, variant_sha);
CREATE INDEX ix_arena_champion_decisions_spec_hash ON arena_champion_decisions (spec_hash);
COMMIT;
