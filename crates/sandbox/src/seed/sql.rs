//! The SQL that creates and fills each seeded database: schemas as the Speech services keep
//! them, rows generated inside PostgreSQL from the seed.

use super::*;

fn owners_array(seed: u64, cast: &str) -> String {
    let ids: Vec<String> = instances(seed).iter().map(|(i, _)| format!("'{i}'")).collect();
    format!("(ARRAY[{}]::{cast}[])", ids.join(","))
}

pub(super) fn stt_customization_sql(seed: u64, p: &Params) -> String {
    let owners = owners_array(seed, "uuid");
    let n = p.stt_customizations;
    let lo_count = n.div_ceil(10).min(20);
    format!(
        r#"
CREATE TYPE model_status AS ENUM ('pending', 'ready', 'training', 'available', 'upgrading', 'failed');
CREATE TABLE customizations (
    customization_id uuid PRIMARY KEY,
    owner uuid NOT NULL,
    name text NOT NULL,
    description text,
    kind text NOT NULL CHECK (kind IN ('language', 'acoustic')),
    base_model_name text NOT NULL,
    status model_status NOT NULL,
    versions text[] NOT NULL,
    settings jsonb NOT NULL,
    created timestamptz NOT NULL,
    updated timestamptz NOT NULL
);
CREATE INDEX customizations_owner_idx ON customizations (owner);
CREATE TABLE corpora (
    corpus_id bigserial PRIMARY KEY,
    customization_id uuid NOT NULL REFERENCES customizations ON DELETE CASCADE,
    name text NOT NULL,
    total_words integer NOT NULL,
    out_of_vocabulary_words integer NOT NULL,
    object_key text NOT NULL,
    UNIQUE (customization_id, name)
);
CREATE TABLE words (
    word_id bigserial PRIMARY KEY,
    customization_id uuid NOT NULL REFERENCES customizations ON DELETE CASCADE,
    word text NOT NULL,
    sounds_like text[] NOT NULL,
    display_as text,
    count integer NOT NULL,
    source text[] NOT NULL
);
CREATE INDEX words_lookup_idx ON words (customization_id, word);
CREATE TABLE grammars (
    grammar_id bigserial PRIMARY KEY,
    customization_id uuid NOT NULL REFERENCES customizations ON DELETE CASCADE,
    name text NOT NULL,
    format text NOT NULL,
    object_key text NOT NULL
);
CREATE TABLE audio_resources (
    audio_id bigserial PRIMARY KEY,
    customization_id uuid NOT NULL REFERENCES customizations ON DELETE CASCADE,
    name text NOT NULL,
    duration_seconds real NOT NULL,
    details jsonb NOT NULL,
    checksum bytea NOT NULL,
    object_key text NOT NULL
);
CREATE TABLE trained_models (
    customization_id uuid PRIMARY KEY REFERENCES customizations ON DELETE CASCADE,
    model oid NOT NULL
);
CREATE VIEW customization_summary AS
    SELECT c.customization_id, c.owner, c.kind, count(w.word_id) AS words
    FROM customizations c LEFT JOIN words w USING (customization_id)
    GROUP BY c.customization_id, c.owner, c.kind;
CREATE FUNCTION touch_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated := now(); RETURN NEW; END $$;
CREATE TRIGGER customizations_touch BEFORE UPDATE ON customizations
    FOR EACH ROW EXECUTE FUNCTION touch_updated();

INSERT INTO customizations
SELECT md5('{seed}:stt:' || g)::uuid, {owners}[1 + g % 3], 'model-' || g,
       CASE WHEN g % 4 = 0 THEN NULL ELSE 'Customization ' || g || ' für Zürich' END,
       CASE WHEN g % 3 = 0 THEN 'acoustic' ELSE 'language' END,
       (ARRAY['en-US_BroadbandModel', 'en-GB_NarrowbandModel', 'de-DE_Multimedia', 'ja-JP_Telephony'])[1 + g % 4],
       (enum_range(NULL::model_status))[1 + g % 6],
       ARRAY['v1', 'v' || (g % 5)],
       jsonb_build_object('dialect', 'en-US', 'weight', (g % 10) / 10.0, 'tags', jsonb_build_array('a', g)),
       timestamptz '2024-01-01 00:00:00+00' + g * interval '37 minutes',
       timestamptz '2024-06-01 00:00:00+00' + g * interval '41 minutes'
FROM generate_series(1, {n}) g;

INSERT INTO corpora (customization_id, name, total_words, out_of_vocabulary_words, object_key)
SELECT md5('{seed}:stt:' || g)::uuid, 'corpus-' || c, 100 + (g * c) % 900, (g + c) % 17,
       'customizations/' || md5('{seed}:stt:' || g)::uuid || '/corpora/corpus-' || c || '.txt'
FROM generate_series(1, {n}) g, generate_series(1, {corpora}) c;

INSERT INTO words (customization_id, word, sounds_like, display_as, count, source)
SELECT md5('{seed}:stt:' || g)::uuid, 'word' || w || '-' || substr(md5('{seed}:w:' || g || ':' || w), 1, 6),
       ARRAY['sound ' || w, 'alt ' || substr(md5('{seed}:s:' || w), 1, 4)],
       CASE WHEN w % 3 = 0 THEN NULL ELSE 'Word' || w END,
       (g * w) % 50, ARRAY['corpus-1', 'user']
FROM generate_series(1, {n}) g, generate_series(1, {words}) w;

INSERT INTO grammars (customization_id, name, format, object_key)
SELECT md5('{seed}:stt:' || g)::uuid, 'grammar-1', 'application/srgs',
       'customizations/' || md5('{seed}:stt:' || g)::uuid || '/grammars/grammar-1.abnf'
FROM generate_series(1, {n}) g;

INSERT INTO audio_resources (customization_id, name, duration_seconds, details, checksum, object_key)
SELECT md5('{seed}:stt:' || g)::uuid, 'audio-' || a, ((g * a) % 600) / 10.0,
       jsonb_build_object('codec', 'pcm', 'frequency', 16000, 'compression', NULL),
       decode(md5('{seed}:a:' || g || ':' || a), 'hex'),
       'customizations/' || md5('{seed}:stt:' || g)::uuid || '/audio/audio-' || a || '.wav'
FROM generate_series(1, {n}) g, generate_series(1, {audio}) a;

INSERT INTO trained_models
SELECT md5('{seed}:stt:' || g)::uuid, lo_from_bytea(0, decode(repeat(md5('{seed}:lo:' || g), 64), 'hex'))
FROM generate_series(1, {lo_count}) g;
"#,
        corpora = p.corpora_per_customization,
        words = p.words_per_customization,
        audio = p.audio_per_customization,
    )
}

pub(super) fn tts_customization_sql(seed: u64, p: &Params) -> String {
    let owners = owners_array(seed, "uuid");
    let n = p.tts_customizations;
    let words = p.tts_words;
    format!(
        r#"
CREATE TABLE speakers (
    speaker_id uuid PRIMARY KEY,
    owner uuid NOT NULL,
    name text NOT NULL,
    created timestamptz NOT NULL
);
CREATE INDEX speakers_owner_idx ON speakers (owner);
CREATE TABLE customizations (
    customization_id uuid PRIMARY KEY,
    owner uuid NOT NULL,
    name text NOT NULL,
    language text NOT NULL,
    description text,
    metadata jsonb NOT NULL,
    created timestamptz NOT NULL,
    updated timestamptz NOT NULL
);
CREATE INDEX tts_customizations_owner_idx ON customizations (owner);
CREATE TABLE words (
    customization_id uuid NOT NULL REFERENCES customizations ON DELETE CASCADE,
    word text NOT NULL,
    translation text NOT NULL,
    part_of_speech text,
    PRIMARY KEY (customization_id, word)
);
CREATE TABLE prompts (
    customization_id uuid NOT NULL REFERENCES customizations ON DELETE CASCADE,
    prompt_id text NOT NULL,
    speaker_id uuid REFERENCES speakers,
    prompt text NOT NULL,
    status text NOT NULL,
    audio bytea,
    PRIMARY KEY (customization_id, prompt_id)
);

INSERT INTO speakers
SELECT md5('{seed}:spk:' || g)::uuid, {owners}[1 + g % 3], 'speaker-' || g,
       timestamptz '2024-02-01 00:00:00+00' + g * interval '3 hours'
FROM generate_series(1, {speakers}) g;

INSERT INTO customizations
SELECT md5('{seed}:tts:' || g)::uuid, {owners}[1 + g % 3], 'voice-model-' || g,
       (ARRAY['en-US', 'de-DE', 'ja-JP'])[1 + g % 3],
       CASE WHEN g % 5 = 0 THEN NULL ELSE 'Custom voice ' || g END,
       jsonb_build_object('voice', 'en-US_AllisonV3Voice', 'rate', g % 7),
       timestamptz '2024-01-15 00:00:00+00' + g * interval '53 minutes',
       timestamptz '2024-07-15 00:00:00+00' + g * interval '59 minutes'
FROM generate_series(1, {n}) g;

INSERT INTO words
SELECT md5('{seed}:tts:' || g)::uuid, 'term' || w, 'tuhrm ' || w, CASE WHEN w % 2 = 0 THEN 'Noun' END
FROM generate_series(1, {n}) g, generate_series(1, {words}) w;

INSERT INTO prompts
SELECT md5('{seed}:tts:' || g)::uuid, 'prompt-' || p, md5('{seed}:spk:' || (1 + (g + p) % {speakers}))::uuid,
       'Thank you for calling, prompt ' || p, (ARRAY['processing', 'available', 'failed'])[1 + p % 3],
       decode(repeat(md5('{seed}:pa:' || g || ':' || p), 16), 'hex')
FROM generate_series(1, {n}) g, generate_series(1, 3) p;
"#,
        speakers = n.div_ceil(2).max(3),
    )
}

/// SQL for the owner of row `g` as text, in the spellings services write: mostly canonical,
/// some upper case, some without hyphens, and the numeric instance also as its raw number.
fn spelled_owner(owners: &str) -> String {
    let x = format!("{owners}[1 + g % 3]");
    format!(
        "(CASE WHEN g % 5 = 0 THEN upper({x}) WHEN g % 5 = 1 THEN replace({x}, '-', '') \
         WHEN g % 5 = 2 AND {x} LIKE '00000000-0000-0000-%' THEN ltrim(replace({x}, '-', ''), '0') ELSE {x} END)"
    )
}

pub(super) fn stt_async_sql(seed: u64, p: &Params) -> String {
    let owners = owners_array(seed, "text");
    let spelled = spelled_owner(&owners);
    let n = p.jobs;
    format!(
        r#"
CREATE TYPE job_status AS ENUM ('waiting', 'processing', 'completed', 'failed');
CREATE TABLE notification_urls (
    url_id serial PRIMARY KEY,
    username text NOT NULL,
    instance_id text NOT NULL,
    url text NOT NULL,
    secret_hash bytea,
    created timestamptz NOT NULL,
    UNIQUE (instance_id, url)
);
CREATE TABLE jobs (
    job_id text PRIMARY KEY,
    username text NOT NULL,
    status job_status NOT NULL,
    model text NOT NULL,
    callback_url text,
    events text[],
    user_token text,
    audio_key text NOT NULL,
    results_key text,
    warnings text[],
    language_customization_id text,
    created timestamptz NOT NULL,
    updated timestamptz NOT NULL
);
CREATE INDEX jobs_status_idx ON jobs (status);
CREATE INDEX jobs_username_idx ON jobs (username);
CREATE TABLE job_results (
    job_id text NOT NULL REFERENCES jobs ON DELETE CASCADE,
    seq integer NOT NULL,
    result jsonb NOT NULL,
    PRIMARY KEY (job_id, seq)
);

INSERT INTO notification_urls (username, instance_id, url, secret_hash, created)
SELECT {spelled}, {spelled}, 'https://callback-' || g || '.example.com/speech?x=' || g,
       CASE WHEN g % 2 = 0 THEN decode(md5('{seed}:sec:' || g), 'hex') END,
       timestamptz '2024-03-01 00:00:00+00' + g * interval '1 day'
FROM generate_series(1, 9) g;

INSERT INTO jobs
SELECT replace(md5('{seed}:job:' || g)::uuid::text, '-', ''), {spelled},
       (ARRAY['waiting', 'processing', 'completed', 'failed']::job_status[])[1 + g % 4],
       'en-US_BroadbandModel',
       CASE WHEN g % 3 = 0 THEN 'https://callback-' || (1 + g % 9) || '.example.com/speech?x=' || (1 + g % 9) END,
       ARRAY['recognitions.completed'], CASE WHEN g % 2 = 0 THEN 'token-' || g END,
       'jobs/' || replace(md5('{seed}:job:' || g)::uuid::text, '-', '') || '/audio.flac',
       CASE WHEN g % 4 = 2 THEN 'jobs/' || replace(md5('{seed}:job:' || g)::uuid::text, '-', '') || '/results.json' END,
       CASE WHEN g % 4 = 3 THEN ARRAY['Unknown arguments: foo.'] END,
       CASE WHEN g % 5 = 0 THEN md5('{seed}:stt:' || (1 + g % {stt}))::uuid::text END,
       timestamptz '2024-04-01 00:00:00+00' + g * interval '5 minutes',
       timestamptz '2024-04-01 00:10:00+00' + g * interval '5 minutes'
FROM generate_series(1, {n}) g;

INSERT INTO job_results
SELECT replace(md5('{seed}:job:' || g)::uuid::text, '-', ''), r,
       jsonb_build_object('result_index', r, 'results', jsonb_build_array(jsonb_build_object(
           'final', true, 'alternatives', jsonb_build_array(jsonb_build_object(
               'transcript', 'hello world ' || g, 'confidence', 0.9)))))
FROM generate_series(1, {n}) g, generate_series(1, {results}) r
WHERE g % 4 = 2;
"#,
        results = p.results_per_job,
        stt = p.stt_customizations.max(1),
    )
}
