/* Unit tests for auth_token_parse: which passwords are taken for
 * submission tokens ("sgt_<id>_<secret>") and which stay passwords. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../server/auth_token.h"

static void test_parse(void **state)
{
    static const struct {
        const char *pw;
        int want;
        long long id;
    } cases[] = {
        {"sgt_1_abc", 1, 1},
        {"sgt_42_Xk7mQp9RtW3vYb2NcH5sJd8f", 1, 42},
        {"sgt_123456789012345678_x", 1, 123456789012345678LL},
        {"sgt_1234567890123456789_x", 0, 0}, /* id too long */
        {"sgt__abc", 0, 0},
        {"sgt_1_", 0, 0},
        {"sgt_1abc", 0, 0},
        {"sgt_x_abc", 0, 0},
        {"SGT_1_abc", 0, 0},
        {"alice-Secret-1", 0, 0},
        {"", 0, 0},
        {"sgt_1_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0,
         0}, /* longer than any token handed out */
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long long id = -1;
        int got = auth_token_parse(cases[i].pw, &id);

        if (got != cases[i].want || (got == 1 && id != cases[i].id)) {
            print_error("\"%s\": got %d id %lld\n", cases[i].pw, got, id);
            fail();
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
