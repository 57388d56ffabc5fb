/* tests/test_mp_hmac.c -- lib/mp_hmac against published test vectors:
 * SHA-256 from FIPS 180-2 (appendix B), HMAC-SHA256 from RFC 4231.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "mp_hmac.h"

static void hex(const uint8_t *d, char out[2 * MP_SHA256_LEN + 1])
{
	for (int i = 0; i < MP_SHA256_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void expect_sha(const char *msg, size_t len, const char *want)
{
	uint8_t d[MP_SHA256_LEN];
	char got[2 * MP_SHA256_LEN + 1];

	mp_sha256(msg, len, d);
	hex(d, got);
	assert_string_equal(got, want);
}

static void test_sha256_matches_fips_180_2(void **state)
{
	(void)state;
	expect_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223"
			     "b00361a396177a9cb410ff61f20015ad");
	expect_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb924"
			  "27ae41e4649b934ca495991b7852b855");
	const char *two =
	    "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";

	expect_sha(two, strlen(two), "248d6a61d20638b8e5c026930c3e6039"
				     "a33ce45964ff2167f6ecedd419db06c1");
}

static void expect_hmac(const void *key, size_t klen, const void *msg,
			size_t mlen, const char *want)
{
	uint8_t d[MP_SHA256_LEN];
	char got[2 * MP_SHA256_LEN + 1];

	mp_hmac_sha256(key, klen, msg, mlen, d);
	hex(d, got);
	assert_string_equal(got, want);
}

static void test_hmac_sha256_matches_rfc_4231(void **state)
{
	uint8_t k1[20], k3[20], m3[50], k6[131];

	(void)state;
	memset(k1, 0x0b, sizeof k1);  /* test case 1 */
	expect_hmac(k1, sizeof k1, "Hi There", 8,
		    "b0344c61d8db38535ca8afceaf0bf12b"
		    "881dc200c9833da726e9376c2e32cff7");
	expect_hmac("Jefe", 4, "what do ya want for nothing?", 28, /* 2 */
		    "5bdcc146bf60754e6a042426089575c7"
		    "5a003f089d2739839dec58b964ec3843");
	memset(k3, 0xaa, sizeof k3);  /* test case 3 */
	memset(m3, 0xdd, sizeof m3);
	expect_hmac(k3, sizeof k3, m3, sizeof m3,
		    "773ea91e36800e46854db8ebd09181a7"
		    "2959098b3ef8c122d9635514ced565fe");
	/* test case 6: a key longer than a block */
	memset(k6, 0xaa, sizeof k6);
	const char *m6 =
	    "Test Using Larger Than Block-Size Key - Hash Key First";

	expect_hmac(k6, sizeof k6, m6, strlen(m6),
		    "60e431591ee0b67f0d8a26aacbf5b77f"
		    "8e0bc6213728c5140546040f0ee37f54");
}

static void test_mac_equal_compares_every_byte(void **state)
{
	uint8_t a[MP_SHA256_LEN] = { 0 }, b[MP_SHA256_LEN] = { 0 };

	(void)state;
	assert_true(mp_mac_equal(a, b, sizeof a));
	b[MP_SHA256_LEN - 1] = 1;  /* differs in the last byte only */
	assert_false(mp_mac_equal(a, b, sizeof a));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha256_matches_fips_180_2),
		cmocka_unit_test(test_hmac_sha256_matches_rfc_4231),
		cmocka_unit_test(test_mac_equal_compares_every_byte),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
