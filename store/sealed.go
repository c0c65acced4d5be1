package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/connmgr/connmgr/security/keyring"
)

// sealedColumn is a column of sealed values: its table, the columns of
// the row's key, and the additional data a value of a row is sealed with.
type sealedColumn struct {
	table, column string
	keys          []string
	ad            func(row map[string]any) []byte
}

// sealed lists every column that holds sealed values. Key rotation,
// CheckKeys and the secret count go through it, so a new sealed column is
// covered by adding it here.
var sealed = []sealedColumn{
	{"connection_secrets", "ciphertext", []string{"connection_id", "field"}, func(r map[string]any) []byte {
		return SecretAD(asInt(r["connection_id"]), asString(r["field"]))
	}},
	{"tokens", "access_token", []string{"connection_id"}, func(r map[string]any) []byte {
		return TokenAD(asInt(r["connection_id"]), "access")
	}},
	{"tokens", "refresh_token", []string{"connection_id"}, func(r map[string]any) []byte {
		return TokenAD(asInt(r["connection_id"]), "refresh")
	}},
	{"oauth_states", "verifier", []string{"state_hash"}, func(r map[string]any) []byte {
		return stateAD(asString(r["state_hash"]))
	}},
	{"instance_secrets", "ciphertext", []string{"name"}, func(r map[string]any) []byte {
		return instanceAD(asString(r["name"]))
	}},
}

func asInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int32:
		return int64(x)
	case int:
		return int64(x)
	}
	return 0
}

func asString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	}
	return ""
}

func asBytes(v any) []byte {
	switch x := v.(type) {
	case []byte:
		return x
	case string:
		return []byte(x)
	}
	return nil
}

// rows returns the key columns and the sealed value of every row of col
// that holds one.
func (col sealedColumn) rows(ctx context.Context, db *gorm.DB) ([]map[string]any, error) {
	var out []map[string]any
	err := db.WithContext(ctx).Table(col.table).Select(append(slices.Clone(col.keys), col.column)).
		Where(col.column + " IS NOT NULL").Find(&out).Error
	return out, translate(err)
}

// ResealCount is how many values of one column keys rotate re-encrypted.
type ResealCount struct {
	What string
	N    int
}

// Reseal re-encrypts every sealed value that ring.Stale reports (sealed
// by a key other than the primary one) under the primary key, one row at a
// time. Each write succeeds only if the row still holds the ciphertext
// that was read, so it is safe while connmgr serves and safe to repeat.
func Reseal(ctx context.Context, db *DB, ring *keyring.KeyRing) ([]ResealCount, error) {
	var counts []ResealCount
	for _, col := range sealed {
		rows, err := col.rows(ctx, db.DB)
		if err != nil {
			return counts, err
		}
		n := 0
		for _, r := range rows {
			ct := asBytes(r[col.column])
			if len(ct) == 0 || !ring.Stale(ct) {
				continue
			}
			pt, err := ring.Open(ct, col.ad(r))
			if err != nil {
				return append(counts, ResealCount{col.table + "." + col.column, n}),
					fmt.Errorf("decrypt %s.%s: %w", col.table, col.column, err)
			}
			fresh, err := ring.Seal(pt, col.ad(r))
			if err != nil {
				return counts, err
			}
			q := db.WithContext(ctx).Table(col.table).Where(col.column+" = ?", ct)
			for _, k := range col.keys {
				q = q.Where(k+" = ?", r[k])
			}
			res := q.Update(col.column, fresh)
			if res.Error != nil {
				return append(counts, ResealCount{col.table + "." + col.column, n}), translate(res.Error)
			}
			n += int(res.RowsAffected)
		}
		counts = append(counts, ResealCount{col.table + "." + col.column, n})
	}
	return counts, nil
}

// HasSecrets reports whether the database holds any sealed value.
func HasSecrets(ctx context.Context, db *DB) (bool, error) {
	for _, col := range sealed {
		var n int64
		if err := db.WithContext(ctx).Table(col.table).Where(col.column + " IS NOT NULL").Limit(1).Count(&n).Error; err != nil {
			return false, translate(err)
		}
		if n > 0 {
			return true, nil
		}
	}
	return false, nil
}

// ErrWrongKeys means the key ring cannot open what the database holds.
var ErrWrongKeys = errors.New("the encryption keys do not match the database")

type keyCheckRow struct {
	KeyID      string    `gorm:"column:key_id;primaryKey"`
	Ciphertext []byte    `gorm:"column:ciphertext"`
	CreatedAt  time.Time `gorm:"column:created_at"`
}

func (keyCheckRow) TableName() string { return "key_checks" }

var keyCheckText = []byte("connmgr key check v1")

func keyCheckAD(id string) []byte { return []byte("connmgr/key_check/" + id) }

// CheckKeys verifies ring against the database before connmgr serves: each
// key id of the ring that sealed anything must open its key-check value
// (the same id with other key material does not), a key new to the
// database gets a key-check value, and every key id the stored secrets
// are sealed with must be in the ring. Key-check values are recorded only
// once the whole ring passed, so a refused ring leaves none behind to
// refuse the right keys later. Errors wrap ErrWrongKeys and say which key
// id is wrong, never key material.
func CheckKeys(ctx context.Context, db *DB, ring *keyring.KeyRing) error {
	known, err := keyChecks(ctx, db)
	if err != nil {
		return err
	}
	used, err := sealedKeyIDs(ctx, db)
	if err != nil {
		return err
	}
	ids := ring.IDs()
	for id := range used {
		if !slices.Contains(ids, id) {
			return fmt.Errorf("%w: the stored secrets are sealed with key %q, which is not in the ring (keep it until keys rotate has run)", ErrWrongKeys, id)
		}
	}
	var fresh []string
	for _, id := range ids {
		if ct, ok := known[id]; ok {
			if err := openKeyCheck(ring, id, ct); err != nil {
				return err
			}
			continue
		}
		if sample, ok := used[id]; ok {
			// Secrets sealed before key checks existed: one of them must open.
			if _, err := ring.Open(sample.ct, sample.ad); err != nil {
				return fmt.Errorf("%w: key %q cannot open the secrets sealed with that id", ErrWrongKeys, id)
			}
		}
		fresh = append(fresh, id)
	}
	for _, id := range fresh {
		ct, err := ring.SealWith(id, keyCheckText, keyCheckAD(id))
		if err != nil {
			return err
		}
		err = db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).
			Create(&keyCheckRow{KeyID: id, Ciphertext: ct, CreatedAt: db.NowFunc()}).Error
		if err != nil {
			return translate(err)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	// Another process starting at the same time may have recorded its own
	// key of the same id first: what is stored now is what counts.
	if known, err = keyChecks(ctx, db); err != nil {
		return err
	}
	for _, id := range fresh {
		if err := openKeyCheck(ring, id, known[id]); err != nil {
			return err
		}
	}
	return nil
}

// keyChecks returns the stored key-check values by key id.
func keyChecks(ctx context.Context, db *DB) (map[string][]byte, error) {
	var checks []keyCheckRow
	if err := db.WithContext(ctx).Find(&checks).Error; err != nil {
		return nil, translate(err)
	}
	known := map[string][]byte{}
	for _, c := range checks {
		known[c.KeyID] = c.Ciphertext
	}
	return known, nil
}

// openKeyCheck reports ErrWrongKeys unless ring's key id opens ct, the
// key-check value of that id.
func openKeyCheck(ring *keyring.KeyRing, id string, ct []byte) error {
	if pt, err := ring.Open(ct, keyCheckAD(id)); err != nil || !bytes.Equal(pt, keyCheckText) {
		return fmt.Errorf("%w: key %q is not the key of that id that sealed this database's secrets", ErrWrongKeys, id)
	}
	return nil
}

type sample struct{ ct, ad []byte }

// sealedKeyIDs returns the key ids the stored values are sealed with, each
// with one of its values and that value's additional data.
func sealedKeyIDs(ctx context.Context, db *DB) (map[string]sample, error) {
	out := map[string]sample{}
	for _, col := range sealed {
		rows, err := col.rows(ctx, db.DB)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			ct := asBytes(r[col.column])
			if len(ct) == 0 {
				continue
			}
			id, ok := keyring.KeyID(ct)
			if !ok {
				return nil, fmt.Errorf("%w: %s.%s holds a value that is not sealed by connmgr", ErrWrongKeys, col.table, col.column)
			}
			if _, seen := out[id]; !seen {
				out[id] = sample{ct, col.ad(r)}
			}
		}
	}
	return out, nil
}

type instanceRow struct {
	Name       string    `gorm:"column:name;primaryKey"`
	Ciphertext []byte    `gorm:"column:ciphertext"`
	CreatedAt  time.Time `gorm:"column:created_at"`
}

func (instanceRow) TableName() string { return "instance_secrets" }

func instanceAD(name string) []byte { return []byte("connmgr/instance/" + name) }

// InstanceSecret returns the instance's 32-byte secret called name,
// creating it (sealed with ring) on first use; every replica on the
// database gets the same one. Keys rotate re-seals it and its value stays,
// so what is derived from it (fingerprints, cursor signatures) survives
// rotation.
func InstanceSecret(ctx context.Context, db *DB, ring *keyring.KeyRing, name string) ([]byte, error) {
	for range 2 {
		var row instanceRow
		err := db.WithContext(ctx).Where("name = ?", name).Take(&row).Error
		if err == nil {
			pt, err := ring.Open(row.Ciphertext, instanceAD(name))
			if err != nil {
				return nil, fmt.Errorf("%w: cannot open the instance secret %q", ErrWrongKeys, name)
			}
			return pt, nil
		}
		if !errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, translate(err)
		}
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
		ct, err := ring.Seal(secret, instanceAD(name))
		if err != nil {
			return nil, err
		}
		// Two replicas starting together: one insert wins, both read it.
		err = db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).
			Create(&instanceRow{Name: name, Ciphertext: ct, CreatedAt: db.NowFunc()}).Error
		if err != nil {
			return nil, translate(err)
		}
	}
	return nil, errors.New("cannot create the instance secret")
}
