import unittest

from app.greeting import InvalidName, greet, normalize


class NormalizeTest(unittest.TestCase):
    def test_trims_and_collapses_spaces(self):
        self.assertEqual(normalize("  Ada   Lovelace "), "Ada Lovelace")

    def test_rejects_empty(self):
        with self.assertRaises(InvalidName):
            normalize("   ")

    def test_rejects_missing(self):
        with self.assertRaises(InvalidName):
            normalize(None)

    def test_rejects_too_long(self):
        with self.assertRaises(InvalidName):
            normalize("a" * 65)

    def test_rejects_markup(self):
        with self.assertRaises(InvalidName):
            normalize("<script>")


class GreetTest(unittest.TestCase):
    def test_english_is_default(self):
        self.assertEqual(greet("Ada"), "Hello, Ada!")

    def test_french(self):
        self.assertEqual(greet("Ada", "fr"), "Bonjour, Ada !")

    def test_german(self):
        self.assertEqual(greet("Ada", "de"), "Hallo, Ada!")

    def test_unknown_language(self):
        with self.assertRaises(InvalidName):
            greet("Ada", "xx")


if __name__ == "__main__":
    unittest.main()
