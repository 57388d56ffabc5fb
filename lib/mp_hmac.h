/* lib/mp_hmac.h -- HMAC-SHA256, for a challenge between processes
 *
 * Python:  multiprocessing.connection.deliver_challenge / answer_challenge
 *          (Lib/multiprocessing/connection.py) prove that both ends of a
 *          Manager's or Listener's connection know the authkey:
 *          hmac.new(authkey, challenge, 'sha256').digest() (3.12 and later;
 *          HMAC-MD5 before).  The authkey is os.urandom(32), made by the
 *          main process and inherited by its children
 *          (Lib/multiprocessing/process.py).
 * C:       libc has no hash functions and this course depends on nothing
 *          else, so here is SHA-256 (FIPS 180-4) and HMAC (RFC 2104) in
 *          about a hundred lines.  Checked against the test vectors of
 *          FIPS 180-2 and RFC 4231 in tests/test_mp_hmac.c.
 */
#ifndef MP_HMAC_H
#define MP_HMAC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { MP_SHA256_LEN = 32 };

/* out = SHA-256(data[0..len)). */
void mp_sha256(const void *data, size_t len, uint8_t out[MP_SHA256_LEN]);

/* out = HMAC-SHA256(key, msg). */
void mp_hmac_sha256(const void *key, size_t key_len, const void *msg,
		    size_t msg_len, uint8_t out[MP_SHA256_LEN]);

/* Compare two MACs in time that does not depend on where they differ (an
 * early exit would tell an attacker how many bytes were right), as
 * Python's hmac.compare_digest. */
bool mp_mac_equal(const uint8_t *a, const uint8_t *b, size_t len);

#endif
