public import OrreryDatabase
internal import OrreryRuntime

/// The versioned schema of the `settlement` schema. Never edit a released migration: add the next one.
public enum SettlementMigrations {
    public static let all: [Migration] = [
        SharedMigrations.consumedInvocations,
        Migration(
            version: 2,
            name: "double-entry ledger",
            statements: [
                // One row per account: "available/<did>", "escrow/<contract>", "receivable/<did>", "fee/<shard>",
                // "clearing/<source>". Only clearing accounts (the outside world) may go below zero.
                """
                CREATE TABLE accounts (
                    id text PRIMARY KEY,
                    owner_did text,
                    kind text NOT NULL CHECK (kind IN ('available', 'escrow', 'receivable', 'fee', 'clearing')),
                    balance numeric(78, 0) NOT NULL DEFAULT 0,
                    CONSTRAINT no_negative_balance CHECK (kind = 'clearing' OR balance >= 0)
                )
                """,
                "CREATE INDEX accounts_by_owner ON accounts (owner_did)",
                """
                CREATE TABLE journal_entries (
                    id bigserial PRIMARY KEY,
                    kind text NOT NULL,
                    contract_id text,
                    memo text NOT NULL DEFAULT '',
                    invoker text NOT NULL,
                    idempotency_key text NOT NULL,
                    request_sha256 bytea NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    UNIQUE (invoker, idempotency_key)
                )
                """,
                """
                CREATE TABLE journal_lines (
                    entry_id bigint NOT NULL REFERENCES journal_entries (id),
                    account_id text NOT NULL REFERENCES accounts (id),
                    amount numeric(78, 0) NOT NULL CHECK (amount <> 0),
                    PRIMARY KEY (entry_id, account_id)
                )
                """,
                "CREATE INDEX journal_lines_by_account ON journal_lines (account_id, entry_id)",
                // Every entry's lines sum to zero, checked when its transaction commits (so the lines of one entry
                // may be written one by one).
                """
                CREATE FUNCTION journal_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
                DECLARE total numeric;
                BEGIN
                    SELECT coalesce(sum(amount), 0) INTO total FROM journal_lines WHERE entry_id = NEW.entry_id;
                    IF total <> 0 THEN
                        RAISE EXCEPTION 'journal entry % does not balance: its lines sum to %', NEW.entry_id, total
                            USING ERRCODE = 'check_violation';
                    END IF;
                    RETURN NULL;
                END
                $$
                """,
                """
                CREATE CONSTRAINT TRIGGER journal_entry_balanced AFTER INSERT ON journal_lines
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION journal_entry_balanced()
                """,
                // The journal is history: lines and entries are never changed or removed.
                """
                CREATE FUNCTION refuse_journal_change() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'the journal is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
                        USING ERRCODE = 'insufficient_privilege';
                END
                $$
                """,
                "CREATE TRIGGER journal_lines_append_only BEFORE UPDATE OR DELETE ON journal_lines FOR EACH ROW EXECUTE FUNCTION refuse_journal_change()",
                "CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries FOR EACH ROW EXECUTE FUNCTION refuse_journal_change()",
            ]
        ),
        Migration(
            version: 3,
            name: "posting an entry in one statement",
            statements: [
                // One round trip per entry: the entry, its accounts (created on first use; `p_new_account` must not
                // exist yet — a contract is escrowed once), their rows locked in id order (no deadlocks), balances
                // changed and lines written. The constraints and the balance trigger still judge it.
                """
                CREATE FUNCTION post_entry(
                    p_kind text, p_contract text, p_memo text, p_invoker text, p_key text, p_sha bytea,
                    p_accounts text[], p_owners text[], p_kinds text[], p_amounts numeric[], p_new_account text
                ) RETURNS bigint LANGUAGE plpgsql AS $$
                DECLARE
                    new_entry bigint;
                BEGIN
                    INSERT INTO journal_entries (kind, contract_id, memo, invoker, idempotency_key, request_sha256)
                    VALUES (p_kind, p_contract, p_memo, p_invoker, p_key, p_sha) RETURNING id INTO new_entry;
                    IF p_new_account IS NOT NULL THEN
                        INSERT INTO accounts (id, owner_did, kind)
                        SELECT a, NULLIF(o, ''), k FROM unnest(p_accounts, p_owners, p_kinds) AS t(a, o, k) WHERE a = p_new_account;
                    END IF;
                    INSERT INTO accounts (id, owner_did, kind)
                    SELECT a, NULLIF(o, ''), k FROM unnest(p_accounts, p_owners, p_kinds) AS t(a, o, k) ORDER BY a
                    ON CONFLICT (id) DO NOTHING;
                    PERFORM 1 FROM accounts WHERE id = ANY (p_accounts) ORDER BY id FOR UPDATE;
                    UPDATE accounts SET balance = balance + t.amount
                    FROM unnest(p_accounts, p_amounts) AS t(account, amount) WHERE accounts.id = t.account;
                    INSERT INTO journal_lines (entry_id, account_id, amount)
                    SELECT new_entry, account, amount FROM unnest(p_accounts, p_amounts) AS t(account, amount);
                    RETURN new_entry;
                END
                $$
                """
            ]
        ),
        Migration(
            version: 4,
            name: "chain adapters: address bindings, deposits, payouts, nonces",
            statements: [
                // An address is bound to one DID per chain; its proof (signature over the challenge) is kept.
                """
                CREATE TABLE address_bindings (
                    chain text NOT NULL CHECK (chain IN ('ethereum', 'cardano')),
                    address text NOT NULL,
                    did text NOT NULL,
                    nonce text NOT NULL UNIQUE,
                    issued_at timestamptz NOT NULL,
                    proof bytea NOT NULL,
                    bound_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (chain, address)
                )
                """,
                "CREATE INDEX address_bindings_by_did ON address_bindings (did, chain, bound_at)",
                // Each observed deposit once, by (chain, transaction, log index); credited when its sender is bound.
                """
                CREATE TABLE chain_deposits (
                    chain text NOT NULL,
                    transaction_hash text NOT NULL,
                    log_index bigint NOT NULL,
                    block_number bigint NOT NULL,
                    from_address text NOT NULL,
                    amount numeric(78, 0) NOT NULL CHECK (amount > 0),
                    credited_to text,
                    entry_id bigint REFERENCES journal_entries (id),
                    observed_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (chain, transaction_hash, log_index)
                )
                """,
                "CREATE INDEX chain_deposits_unattributed ON chain_deposits (chain, from_address) WHERE credited_to IS NULL",
                "CREATE TABLE chain_cursors (chain text PRIMARY KEY, next_block bigint NOT NULL)",
                // The next nonce of each sending address, allocated under a row lock with the payout that uses it.
                """
                CREATE TABLE chain_nonces (
                    chain text NOT NULL, address text NOT NULL, next_nonce bigint NOT NULL,
                    PRIMARY KEY (chain, address)
                )
                """,
                // Withdrawals (signed and broadcast by the gateway) and channel vouchers (redeemed by the payee).
                """
                CREATE TABLE payouts (
                    id text PRIMARY KEY,
                    did text NOT NULL,
                    chain text NOT NULL,
                    address text NOT NULL,
                    amount numeric(78, 0) NOT NULL CHECK (amount > 0),
                    kind text NOT NULL CHECK (kind IN ('withdrawal', 'voucher')),
                    source_account text,
                    contract_id text UNIQUE,
                    state text NOT NULL CHECK (state IN ('intent', 'signed', 'broadcast', 'confirmed', 'failed')),
                    nonce bigint,
                    raw_transaction bytea,
                    max_fee_per_gas numeric(78, 0),
                    max_priority_fee_per_gas numeric(78, 0),
                    transactions text[] NOT NULL DEFAULT '{}',
                    confirmed_transaction text,
                    voucher_signature bytea,
                    channel bytea,
                    error text NOT NULL DEFAULT '',
                    entry_id bigint REFERENCES journal_entries (id),
                    created_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    broadcast_at timestamptz
                )
                """,
                "CREATE INDEX payouts_by_did ON payouts (did, created_at DESC)",
                "CREATE INDEX payouts_pending ON payouts (state) WHERE state IN ('intent', 'signed', 'broadcast')",
                "CREATE UNIQUE INDEX payouts_by_entry ON payouts (entry_id)",
                // Escrows held on chain (payment channels) and what was released from them.
                """
                CREATE TABLE channel_escrows (
                    contract_id text PRIMARY KEY,
                    channel bytea NOT NULL UNIQUE,
                    payer text NOT NULL,
                    payee text NOT NULL,
                    deposit numeric(78, 0) NOT NULL,
                    expiry bigint NOT NULL
                )
                """,
            ]
        ),
        Migration(
            version: 5,
            name: "contracts to record as settled",
            statements: [
                // Written with a contract's refund; the settler records each as settled in the notary's log.
                """
                CREATE TABLE settlements (
                    contract_id text PRIMARY KEY,
                    settled_at timestamptz,
                    attempts integer NOT NULL DEFAULT 0,
                    last_error text NOT NULL DEFAULT ''
                )
                """,
                "CREATE INDEX settlements_pending ON settlements (contract_id) WHERE settled_at IS NULL",
            ]
        ),
        Migration(
            version: 6,
            name: "batched postings, each entry checked once",
            statements: [
                // Every statement that writes journal lines is checked once, right after it: each entry it touched
                // must sum to zero over all its lines. So an entry's lines are written together, in one statement
                // (a line added to an entry later unbalances it and is refused), and the check runs once per entry
                // instead of once per line at commit. Accounts are changed by primary key, in id order.
                "DROP TRIGGER journal_entry_balanced ON journal_lines",
                """
                CREATE FUNCTION journal_statement_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
                DECLARE
                    touched bigint;
                    total numeric;
                BEGIN
                    -- Entry by entry, each summed by its primary key (never a scan of the journal).
                    FOR touched IN SELECT DISTINCT n.entry_id FROM new_lines n LOOP
                        SELECT coalesce(sum(l.amount), 0) INTO total FROM journal_lines l WHERE l.entry_id = touched;
                        IF total <> 0 THEN
                            RAISE EXCEPTION 'journal entry % does not balance: its lines sum to %', touched, total
                                USING ERRCODE = 'check_violation';
                        END IF;
                    END LOOP;
                    RETURN NULL;
                END
                $$
                """,
                """
                CREATE TRIGGER journal_statement_balanced AFTER INSERT ON journal_lines
                REFERENCING NEW TABLE AS new_lines FOR EACH STATEMENT EXECUTE FUNCTION journal_statement_balanced()
                """,
                """
                CREATE OR REPLACE FUNCTION post_entry(
                    p_kind text, p_contract text, p_memo text, p_invoker text, p_key text, p_sha bytea,
                    p_accounts text[], p_owners text[], p_kinds text[], p_amounts numeric[], p_new_account text
                ) RETURNS bigint LANGUAGE plpgsql AS $$
                DECLARE
                    new_entry bigint;
                    position integer;
                BEGIN
                    INSERT INTO journal_entries (kind, contract_id, memo, invoker, idempotency_key, request_sha256)
                    VALUES (p_kind, p_contract, p_memo, p_invoker, p_key, p_sha) RETURNING id INTO new_entry;
                    -- The account that must be new first: a second escrow of a contract fails here, whatever else.
                    IF p_new_account IS NOT NULL THEN
                        INSERT INTO accounts (id, owner_did, kind)
                        SELECT a, NULLIF(o, ''), k FROM unnest(p_accounts, p_owners, p_kinds) AS t(a, o, k)
                        WHERE a = p_new_account;
                    END IF;
                    FOR position IN
                        SELECT o FROM unnest(p_accounts) WITH ORDINALITY AS t(a, o) ORDER BY a
                    LOOP
                        UPDATE accounts SET balance = balance + p_amounts[position] WHERE id = p_accounts[position];
                        IF NOT FOUND THEN
                            BEGIN
                                INSERT INTO accounts (id, owner_did, kind, balance)
                                VALUES (p_accounts[position], NULLIF(p_owners[position], ''), p_kinds[position],
                                        p_amounts[position]);
                            EXCEPTION WHEN unique_violation THEN
                                -- Created by a concurrent entry in between: change it like any other.
                                UPDATE accounts SET balance = balance + p_amounts[position]
                                WHERE id = p_accounts[position];
                            END;
                        END IF;
                    END LOOP;
                    INSERT INTO journal_lines (entry_id, account_id, amount)
                    SELECT new_entry, a, x FROM unnest(p_accounts, p_amounts) AS t(a, x);
                    RETURN new_entry;
                END
                $$
                """,
                // A batch of entries in one statement (one transaction, one WAL flush), each in its own
                // subtransaction: a refused entry is reported and leaves no trace, the others stay. A release
                // entry's lines are computed here under the escrow's row lock: what is due less what was released
                // already (what was held less what is left, by the account's index), at most what is left, less the
                // fee.
                """
                CREATE FUNCTION post_entries(p_entries jsonb) RETURNS TABLE (
                    ordinal integer, entry_id bigint, created_at timestamptz, state text, constraint_name text,
                    message text, released numeric, fee numeric
                ) LANGUAGE plpgsql AS $$
                DECLARE
                    e jsonb;
                    position integer := 0;
                    v_accounts text[];
                    v_owners text[];
                    v_kinds text[];
                    v_amounts numeric[];
                    v_held numeric;
                    v_consumer text;
                    v_released numeric;
                    v_due numeric;
                    v_amount numeric;
                    v_fee numeric;
                    v_escrow text;
                    v_id bigint;
                    v_state text;
                    v_constraint text;
                    v_message text;
                BEGIN
                    FOR e IN SELECT value FROM jsonb_array_elements(p_entries) LOOP
                        position := position + 1;
                        v_amount := NULL;
                        v_fee := NULL;
                        BEGIN
                            IF e ? 'due' THEN
                                v_escrow := 'escrow/' || (e->>'contract');
                                SELECT a.balance, a.owner_did INTO v_held, v_consumer FROM accounts a
                                WHERE a.id = v_escrow FOR UPDATE;
                                IF NOT FOUND THEN
                                    RAISE EXCEPTION 'contract % has no escrow', e->>'contract' USING ERRCODE = 'ORNOE';
                                END IF;
                                -- Released so far: what was held less what is left (a refund empties the escrow, and
                                -- nothing is released after it). By the account's index, never a scan.
                                SELECT coalesce(sum(l.amount), 0) - v_held INTO v_released
                                FROM journal_lines l WHERE l.account_id = v_escrow AND l.amount > 0;
                                v_due := (e->>'due')::numeric;
                                IF v_due <= v_released OR v_held <= 0 THEN
                                    RAISE EXCEPTION 'nothing more is due for %: % of % released, % left in escrow',
                                        e->>'contract', v_released, v_due, v_held USING ERRCODE = 'ORNDU';
                                END IF;
                                v_amount := least(v_due - v_released, v_held);
                                v_fee := floor(v_amount * (e->>'fee_bps')::numeric / 10000);
                                v_accounts := ARRAY[v_escrow, 'receivable/' || (e->>'owner')];
                                v_owners := ARRAY[v_consumer, e->>'owner'];
                                v_kinds := ARRAY['escrow', 'receivable'];
                                v_amounts := ARRAY[-v_amount, v_amount - v_fee];
                                IF v_fee > 0 THEN
                                    v_accounts := v_accounts || (e->>'fee_account');
                                    v_owners := v_owners || ''::text;
                                    v_kinds := v_kinds || 'fee'::text;
                                    v_amounts := v_amounts || v_fee;
                                END IF;
                            ELSE
                                v_accounts := ARRAY(SELECT jsonb_array_elements_text(e->'accounts'));
                                v_owners := ARRAY(SELECT jsonb_array_elements_text(e->'owners'));
                                v_kinds := ARRAY(SELECT jsonb_array_elements_text(e->'kinds'));
                                v_amounts := ARRAY(SELECT x::numeric FROM jsonb_array_elements_text(e->'amounts') x);
                            END IF;
                            IF (SELECT coalesce(sum(x), 0) FROM unnest(v_amounts) x) <> 0 THEN
                                RAISE EXCEPTION 'the entry does not balance' USING ERRCODE = 'check_violation';
                            END IF;
                            v_id := post_entry(e->>'kind', e->>'contract', e->>'memo', e->>'invoker', e->>'key',
                                decode(e->>'sha', 'hex'), v_accounts, v_owners, v_kinds, v_amounts, e->>'new_account');
                            RETURN QUERY SELECT position, v_id, j.created_at, ''::text, ''::text, ''::text, v_amount, v_fee
                                FROM journal_entries j WHERE j.id = v_id;
                        EXCEPTION WHEN OTHERS THEN
                            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_constraint = CONSTRAINT_NAME,
                                v_message = MESSAGE_TEXT;
                            RETURN QUERY SELECT position, NULL::bigint, NULL::timestamptz, v_state, v_constraint,
                                v_message, NULL::numeric, NULL::numeric;
                        END;
                    END LOOP;
                END
                $$
                """,
            ]
        ),
        Migration(
            version: 7,
            name: "postings with fewer statements",
            statements: [
                // The lines of a posting, read from its JSON in one expression (no query per array).
                "CREATE TYPE ledger_lines AS (accounts text[], owners text[], kinds text[], amounts numeric[])",
                // Unbalanced entries found in one query, whatever the statement wrote.
                """
                CREATE OR REPLACE FUNCTION journal_statement_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
                DECLARE
                    unbalanced bigint;
                    total numeric;
                BEGIN
                    -- Each touched entry summed by its primary key (a lateral lookup: never a scan of the journal).
                    SELECT t.entry_id, s.total INTO unbalanced, total
                    FROM (SELECT DISTINCT n.entry_id FROM new_lines n) t
                    CROSS JOIN LATERAL (
                        SELECT coalesce(sum(l.amount), 0) AS total FROM journal_lines l WHERE l.entry_id = t.entry_id
                    ) s
                    WHERE s.total <> 0 LIMIT 1;
                    IF FOUND THEN
                        RAISE EXCEPTION 'journal entry % does not balance: its lines sum to %', unbalanced, total
                            USING ERRCODE = 'check_violation';
                    END IF;
                    RETURN NULL;
                END
                $$
                """,
                // As in version 6, with the lines read in one expression, their sum checked without a query, and
                // each outcome returned without reading the entry back (its created_at is the transaction's now()).
                """
                CREATE OR REPLACE FUNCTION post_entries(p_entries jsonb) RETURNS TABLE (
                    ordinal integer, entry_id bigint, created_at timestamptz, state text, constraint_name text,
                    message text, released numeric, fee numeric
                ) LANGUAGE plpgsql AS $$
                DECLARE
                    e jsonb;
                    position integer := 0;
                    v_lines ledger_lines;
                    v_sum numeric;
                    v_line numeric;
                    v_held numeric;
                    v_consumer text;
                    v_released numeric;
                    v_due numeric;
                    v_amount numeric;
                    v_fee numeric;
                    v_escrow text;
                    v_id bigint;
                    v_state text;
                    v_constraint text;
                    v_message text;
                BEGIN
                    FOR e IN SELECT value FROM jsonb_array_elements(p_entries) LOOP
                        position := position + 1;
                        v_amount := NULL;
                        v_fee := NULL;
                        BEGIN
                            IF e ? 'due' THEN
                                v_escrow := 'escrow/' || (e->>'contract');
                                SELECT a.balance, a.owner_did INTO v_held, v_consumer FROM accounts a
                                WHERE a.id = v_escrow FOR UPDATE;
                                IF NOT FOUND THEN
                                    RAISE EXCEPTION 'contract % has no escrow', e->>'contract' USING ERRCODE = 'ORNOE';
                                END IF;
                                -- Released so far: what was held less what is left (a refund empties the escrow, and
                                -- nothing is released after it). By the account's index, never a scan.
                                SELECT coalesce(sum(l.amount), 0) - v_held INTO v_released
                                FROM journal_lines l WHERE l.account_id = v_escrow AND l.amount > 0;
                                v_due := (e->>'due')::numeric;
                                IF v_due <= v_released OR v_held <= 0 THEN
                                    RAISE EXCEPTION 'nothing more is due for %: % of % released, % left in escrow',
                                        e->>'contract', v_released, v_due, v_held USING ERRCODE = 'ORNDU';
                                END IF;
                                v_amount := least(v_due - v_released, v_held);
                                v_fee := floor(v_amount * (e->>'fee_bps')::numeric / 10000);
                                v_lines := ROW(
                                    ARRAY[v_escrow, 'receivable/' || (e->>'owner')], ARRAY[v_consumer, e->>'owner'],
                                    ARRAY['escrow', 'receivable'], ARRAY[-v_amount, v_amount - v_fee]
                                )::ledger_lines;
                                IF v_fee > 0 THEN
                                    v_lines := ROW(
                                        v_lines.accounts || (e->>'fee_account'), v_lines.owners || ''::text,
                                        v_lines.kinds || 'fee'::text, v_lines.amounts || v_fee
                                    )::ledger_lines;
                                END IF;
                            ELSE
                                v_lines := jsonb_populate_record(NULL::ledger_lines, e);
                            END IF;
                            v_sum := 0;
                            FOREACH v_line IN ARRAY v_lines.amounts LOOP
                                v_sum := v_sum + v_line;
                            END LOOP;
                            IF v_sum <> 0 THEN
                                RAISE EXCEPTION 'the entry does not balance' USING ERRCODE = 'check_violation';
                            END IF;
                            v_id := post_entry(e->>'kind', e->>'contract', e->>'memo', e->>'invoker', e->>'key',
                                decode(e->>'sha', 'hex'), v_lines.accounts, v_lines.owners, v_lines.kinds,
                                v_lines.amounts, e->>'new_account');
                            ordinal := position;
                            entry_id := v_id;
                            created_at := now();
                            state := '';
                            constraint_name := '';
                            message := '';
                            released := v_amount;
                            fee := v_fee;
                            RETURN NEXT;
                        EXCEPTION WHEN OTHERS THEN
                            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_constraint = CONSTRAINT_NAME,
                                v_message = MESSAGE_TEXT;
                            ordinal := position;
                            entry_id := NULL;
                            created_at := NULL;
                            state := v_state;
                            constraint_name := v_constraint;
                            message := v_message;
                            released := NULL;
                            fee := NULL;
                            RETURN NEXT;
                        END;
                    END LOOP;
                END
                $$
                """,
            ]
        ),
        Migration(
            version: 8,
            name: "the journal's hash chain, its signed checkpoints, and the proofs releases were made against",
            statements: [
                // Entries wait here to be sealed into the chain (JournalSealer): a posting only queues its entry.
                "CREATE TABLE journal_unsealed (entry_id bigint PRIMARY KEY REFERENCES journal_entries (id))",
                """
                CREATE FUNCTION queue_journal_entry() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO journal_unsealed (entry_id) VALUES (NEW.id);
                    RETURN NULL;
                END
                $$
                """,
                """
                CREATE TRIGGER journal_entries_queue AFTER INSERT ON journal_entries
                FOR EACH ROW EXECUTE FUNCTION queue_journal_entry()
                """,
                "INSERT INTO journal_unsealed (entry_id) SELECT id FROM journal_entries",
                // Position n's digest covers digest n-1 and every field of its entry (JournalChain).
                """
                CREATE TABLE journal_chain (
                    position bigint PRIMARY KEY CHECK (position > 0),
                    entry_id bigint NOT NULL UNIQUE REFERENCES journal_entries (id),
                    digest bytea NOT NULL
                )
                """,
                "CREATE TRIGGER journal_chain_append_only BEFORE UPDATE OR DELETE ON journal_chain FOR EACH ROW EXECUTE FUNCTION refuse_journal_change()",
                // The chain's head after each sealing, signed by the gateway (a Signed JournalCheckpoint).
                """
                CREATE TABLE journal_checkpoints (
                    position bigint PRIMARY KEY,
                    signed bytea NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now()
                )
                """,
                "CREATE TRIGGER journal_checkpoints_append_only BEFORE UPDATE OR DELETE ON journal_checkpoints FOR EACH ROW EXECUTE FUNCTION refuse_journal_change()",
                // Each release request as received, by its SHA-256 (its entry's request_sha256): what it was proven by.
                "CREATE TABLE release_proofs (request_sha256 bytea PRIMARY KEY, request bytea NOT NULL)",
                // Releases up to this entry were posted before proofs were kept.
                "CREATE TABLE journal_audit_start (proofs_kept_after bigint NOT NULL)",
                "INSERT INTO journal_audit_start SELECT coalesce(max(id), 0) FROM journal_entries",
            ]
        ),
        Migration(
            version: 9,
            name: "the sealing queue and the chain name entries without foreign keys",
            statements: [
                // Journal entries are never updated or deleted (refuse_journal_change), so these keys guarded nothing,
                // yet each cost a row lock and a lookup per posted entry and per sealed one. The audit proves the
                // chain covers every entry and names only entries that exist (JournalAudit).
                "ALTER TABLE journal_unsealed DROP CONSTRAINT journal_unsealed_entry_id_fkey",
                "ALTER TABLE journal_chain DROP CONSTRAINT journal_chain_entry_id_fkey",
            ]
        ),
    ]
}
