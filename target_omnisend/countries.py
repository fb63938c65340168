"""ISO 3166-1 countries and their international calling codes.

Generated from Debian's iso-codes (ISO 3166-1) and the calling codes of libphonenumber's
metadata, plus common aliases ("USA", "UK", ...). `lookup_country` accepts an alpha-2 code, an
alpha-3 code, the English short name, or an alias, in any case and with or without accents.
"""

from __future__ import annotations

import unicodedata
from typing import NamedTuple


class Country(NamedTuple):
    """One ISO 3166-1 country."""

    alpha2: str
    alpha3: str
    calling_code: int | None
    name: str
    aliases: tuple[str, ...] = ()


# alpha-2, alpha-3, calling code (None: no public numbering plan), display name, aliases
_COUNTRIES: tuple[Country, ...] = (
    Country("AD", "AND", 376, "Andorra", ("Principality of Andorra",)),
    Country("AE", "ARE", 971, "United Arab Emirates", ("UAE", "Emirates")),
    Country("AF", "AFG", 93, "Afghanistan", ("Islamic Republic of Afghanistan",)),
    Country("AG", "ATG", 1, "Antigua and Barbuda", ()),
    Country("AI", "AIA", 1, "Anguilla", ()),
    Country("AL", "ALB", 355, "Albania", ("Republic of Albania",)),
    Country("AM", "ARM", 374, "Armenia", ("Republic of Armenia",)),
    Country("AO", "AGO", 244, "Angola", ("Republic of Angola",)),
    Country("AQ", "ATA", None, "Antarctica", ()),
    Country("AR", "ARG", 54, "Argentina", ("Argentine Republic",)),
    Country("AS", "ASM", 1, "American Samoa", ()),
    Country("AT", "AUT", 43, "Austria", ("Republic of Austria", "Österreich")),
    Country("AU", "AUS", 61, "Australia", ()),
    Country("AW", "ABW", 297, "Aruba", ()),
    Country("AX", "ALA", 358, "Åland Islands", ()),
    Country("AZ", "AZE", 994, "Azerbaijan", ("Republic of Azerbaijan",)),
    Country("BA", "BIH", 387, "Bosnia and Herzegovina", ("Republic of Bosnia and Herzegovina",)),
    Country("BB", "BRB", 1, "Barbados", ()),
    Country("BD", "BGD", 880, "Bangladesh", ("People's Republic of Bangladesh",)),
    Country("BE", "BEL", 32, "Belgium", ("Kingdom of Belgium",)),
    Country("BF", "BFA", 226, "Burkina Faso", ()),
    Country("BG", "BGR", 359, "Bulgaria", ("Republic of Bulgaria",)),
    Country("BH", "BHR", 973, "Bahrain", ("Kingdom of Bahrain",)),
    Country("BI", "BDI", 257, "Burundi", ("Republic of Burundi",)),
    Country("BJ", "BEN", 229, "Benin", ("Republic of Benin",)),
    Country("BL", "BLM", 590, "Saint Barthélemy", ()),
    Country("BM", "BMU", 1, "Bermuda", ()),
    Country("BN", "BRN", 673, "Brunei", ("Brunei Darussalam",)),
    Country(
        "BO",
        "BOL",
        591,
        "Bolivia",
        ("Bolivia, Plurinational State of", "Plurinational State of Bolivia"),
    ),
    Country("BQ", "BES", 599, "Bonaire, Sint Eustatius and Saba", ()),
    Country("BR", "BRA", 55, "Brazil", ("Federative Republic of Brazil",)),
    Country("BS", "BHS", 1, "Bahamas", ("Commonwealth of the Bahamas",)),
    Country("BT", "BTN", 975, "Bhutan", ("Kingdom of Bhutan",)),
    Country("BV", "BVT", None, "Bouvet Island", ()),
    Country("BW", "BWA", 267, "Botswana", ("Republic of Botswana",)),
    Country("BY", "BLR", 375, "Belarus", ("Republic of Belarus",)),
    Country("BZ", "BLZ", 501, "Belize", ()),
    Country("CA", "CAN", 1, "Canada", ()),
    Country("CC", "CCK", 61, "Cocos (Keeling) Islands", ()),
    Country(
        "CD",
        "COD",
        243,
        "Democratic Republic of the Congo",
        ("Congo, The Democratic Republic of the", "DR Congo", "DRC", "Congo-Kinshasa"),
    ),
    Country("CF", "CAF", 236, "Central African Republic", ()),
    Country("CG", "COG", 242, "Congo", ("Republic of the Congo", "Congo-Brazzaville")),
    Country("CH", "CHE", 41, "Switzerland", ("Swiss Confederation", "Schweiz", "Suisse")),
    Country(
        "CI",
        "CIV",
        225,
        "Côte d'Ivoire",
        ("Republic of Côte d'Ivoire", "Ivory Coast", "Cote d'Ivoire"),
    ),
    Country("CK", "COK", 682, "Cook Islands", ()),
    Country("CL", "CHL", 56, "Chile", ("Republic of Chile",)),
    Country("CM", "CMR", 237, "Cameroon", ("Republic of Cameroon",)),
    Country("CN", "CHN", 86, "China", ("People's Republic of China",)),
    Country("CO", "COL", 57, "Colombia", ("Republic of Colombia",)),
    Country("CR", "CRI", 506, "Costa Rica", ("Republic of Costa Rica",)),
    Country("CU", "CUB", 53, "Cuba", ("Republic of Cuba",)),
    Country("CV", "CPV", 238, "Cabo Verde", ("Republic of Cabo Verde", "Cape Verde")),
    Country("CW", "CUW", 599, "Curaçao", ()),
    Country("CX", "CXR", 61, "Christmas Island", ()),
    Country("CY", "CYP", 357, "Cyprus", ("Republic of Cyprus",)),
    Country("CZ", "CZE", 420, "Czechia", ("Czech Republic",)),
    Country("DE", "DEU", 49, "Germany", ("Federal Republic of Germany", "Deutschland")),
    Country("DJ", "DJI", 253, "Djibouti", ("Republic of Djibouti",)),
    Country("DK", "DNK", 45, "Denmark", ("Kingdom of Denmark",)),
    Country("DM", "DMA", 1, "Dominica", ("Commonwealth of Dominica",)),
    Country("DO", "DOM", 1, "Dominican Republic", ()),
    Country("DZ", "DZA", 213, "Algeria", ("People's Democratic Republic of Algeria",)),
    Country("EC", "ECU", 593, "Ecuador", ("Republic of Ecuador",)),
    Country("EE", "EST", 372, "Estonia", ("Republic of Estonia",)),
    Country("EG", "EGY", 20, "Egypt", ("Arab Republic of Egypt",)),
    Country("EH", "ESH", 212, "Western Sahara", ()),
    Country("ER", "ERI", 291, "Eritrea", ("the State of Eritrea",)),
    Country("ES", "ESP", 34, "Spain", ("Kingdom of Spain", "España", "Espana")),
    Country("ET", "ETH", 251, "Ethiopia", ("Federal Democratic Republic of Ethiopia",)),
    Country("FI", "FIN", 358, "Finland", ("Republic of Finland",)),
    Country("FJ", "FJI", 679, "Fiji", ("Republic of Fiji",)),
    Country("FK", "FLK", 500, "Falkland Islands (Malvinas)", ()),
    Country(
        "FM",
        "FSM",
        691,
        "Micronesia",
        ("Micronesia, Federated States of", "Federated States of Micronesia"),
    ),
    Country("FO", "FRO", 298, "Faroe Islands", ()),
    Country("FR", "FRA", 33, "France", ("French Republic",)),
    Country("GA", "GAB", 241, "Gabon", ("Gabonese Republic",)),
    Country(
        "GB",
        "GBR",
        44,
        "United Kingdom",
        (
            "United Kingdom of Great Britain and Northern Ireland",
            "UK",
            "U.K.",
            "Great Britain",
            "Britain",
            "England",
            "Scotland",
            "Wales",
            "Northern Ireland",
        ),
    ),
    Country("GD", "GRD", 1, "Grenada", ()),
    Country("GE", "GEO", 995, "Georgia", ()),
    Country("GF", "GUF", 594, "French Guiana", ()),
    Country("GG", "GGY", 44, "Guernsey", ()),
    Country("GH", "GHA", 233, "Ghana", ("Republic of Ghana",)),
    Country("GI", "GIB", 350, "Gibraltar", ()),
    Country("GL", "GRL", 299, "Greenland", ()),
    Country("GM", "GMB", 220, "Gambia", ("Republic of the Gambia",)),
    Country("GN", "GIN", 224, "Guinea", ("Republic of Guinea",)),
    Country("GP", "GLP", 590, "Guadeloupe", ()),
    Country("GQ", "GNQ", 240, "Equatorial Guinea", ("Republic of Equatorial Guinea",)),
    Country("GR", "GRC", 30, "Greece", ("Hellenic Republic",)),
    Country("GS", "SGS", None, "South Georgia and the South Sandwich Islands", ()),
    Country("GT", "GTM", 502, "Guatemala", ("Republic of Guatemala",)),
    Country("GU", "GUM", 1, "Guam", ()),
    Country("GW", "GNB", 245, "Guinea-Bissau", ("Republic of Guinea-Bissau",)),
    Country("GY", "GUY", 592, "Guyana", ("Republic of Guyana",)),
    Country("HK", "HKG", 852, "Hong Kong", ("Hong Kong Special Administrative Region of China",)),
    Country("HM", "HMD", None, "Heard Island and McDonald Islands", ()),
    Country("HN", "HND", 504, "Honduras", ("Republic of Honduras",)),
    Country("HR", "HRV", 385, "Croatia", ("Republic of Croatia",)),
    Country("HT", "HTI", 509, "Haiti", ("Republic of Haiti",)),
    Country("HU", "HUN", 36, "Hungary", ()),
    Country("ID", "IDN", 62, "Indonesia", ("Republic of Indonesia",)),
    Country("IE", "IRL", 353, "Ireland", ()),
    Country("IL", "ISR", 972, "Israel", ("State of Israel",)),
    Country("IM", "IMN", 44, "Isle of Man", ()),
    Country("IN", "IND", 91, "India", ("Republic of India",)),
    Country("IO", "IOT", 246, "British Indian Ocean Territory", ()),
    Country("IQ", "IRQ", 964, "Iraq", ("Republic of Iraq",)),
    Country("IR", "IRN", 98, "Iran", ("Iran, Islamic Republic of", "Islamic Republic of Iran")),
    Country("IS", "ISL", 354, "Iceland", ("Republic of Iceland",)),
    Country("IT", "ITA", 39, "Italy", ("Italian Republic",)),
    Country("JE", "JEY", 44, "Jersey", ()),
    Country("JM", "JAM", 1, "Jamaica", ()),
    Country("JO", "JOR", 962, "Jordan", ("Hashemite Kingdom of Jordan",)),
    Country("JP", "JPN", 81, "Japan", ()),
    Country("KE", "KEN", 254, "Kenya", ("Republic of Kenya",)),
    Country("KG", "KGZ", 996, "Kyrgyzstan", ("Kyrgyz Republic",)),
    Country("KH", "KHM", 855, "Cambodia", ("Kingdom of Cambodia",)),
    Country("KI", "KIR", 686, "Kiribati", ("Republic of Kiribati",)),
    Country("KM", "COM", 269, "Comoros", ("Union of the Comoros",)),
    Country("KN", "KNA", 1, "Saint Kitts and Nevis", ()),
    Country(
        "KP",
        "PRK",
        850,
        "North Korea",
        ("Korea, Democratic People's Republic of", "Democratic People's Republic of Korea"),
    ),
    Country("KR", "KOR", 82, "South Korea", ("Korea, Republic of", "Korea", "Republic of Korea")),
    Country("KW", "KWT", 965, "Kuwait", ("State of Kuwait",)),
    Country("KY", "CYM", 1, "Cayman Islands", ()),
    Country("KZ", "KAZ", 7, "Kazakhstan", ("Republic of Kazakhstan",)),
    Country("LA", "LAO", 856, "Laos", ("Lao People's Democratic Republic",)),
    Country("LB", "LBN", 961, "Lebanon", ("Lebanese Republic",)),
    Country("LC", "LCA", 1, "Saint Lucia", ()),
    Country("LI", "LIE", 423, "Liechtenstein", ("Principality of Liechtenstein",)),
    Country("LK", "LKA", 94, "Sri Lanka", ("Democratic Socialist Republic of Sri Lanka",)),
    Country("LR", "LBR", 231, "Liberia", ("Republic of Liberia",)),
    Country("LS", "LSO", 266, "Lesotho", ("Kingdom of Lesotho",)),
    Country("LT", "LTU", 370, "Lithuania", ("Republic of Lithuania",)),
    Country("LU", "LUX", 352, "Luxembourg", ("Grand Duchy of Luxembourg",)),
    Country("LV", "LVA", 371, "Latvia", ("Republic of Latvia",)),
    Country("LY", "LBY", 218, "Libya", ()),
    Country("MA", "MAR", 212, "Morocco", ("Kingdom of Morocco",)),
    Country("MC", "MCO", 377, "Monaco", ("Principality of Monaco",)),
    Country("MD", "MDA", 373, "Moldova", ("Moldova, Republic of", "Republic of Moldova")),
    Country("ME", "MNE", 382, "Montenegro", ()),
    Country("MF", "MAF", 590, "Saint Martin (French part)", ()),
    Country("MG", "MDG", 261, "Madagascar", ("Republic of Madagascar",)),
    Country("MH", "MHL", 692, "Marshall Islands", ("Republic of the Marshall Islands",)),
    Country("MK", "MKD", 389, "North Macedonia", ("Republic of North Macedonia", "Macedonia")),
    Country("ML", "MLI", 223, "Mali", ("Republic of Mali",)),
    Country("MM", "MMR", 95, "Myanmar", ("Republic of Myanmar", "Burma")),
    Country("MN", "MNG", 976, "Mongolia", ()),
    Country("MO", "MAC", 853, "Macao", ("Macao Special Administrative Region of China", "Macau")),
    Country(
        "MP",
        "MNP",
        1,
        "Northern Mariana Islands",
        ("Commonwealth of the Northern Mariana Islands",),
    ),
    Country("MQ", "MTQ", 596, "Martinique", ()),
    Country("MR", "MRT", 222, "Mauritania", ("Islamic Republic of Mauritania",)),
    Country("MS", "MSR", 1, "Montserrat", ()),
    Country("MT", "MLT", 356, "Malta", ("Republic of Malta",)),
    Country("MU", "MUS", 230, "Mauritius", ("Republic of Mauritius",)),
    Country("MV", "MDV", 960, "Maldives", ("Republic of Maldives",)),
    Country("MW", "MWI", 265, "Malawi", ("Republic of Malawi",)),
    Country("MX", "MEX", 52, "Mexico", ("United Mexican States",)),
    Country("MY", "MYS", 60, "Malaysia", ()),
    Country("MZ", "MOZ", 258, "Mozambique", ("Republic of Mozambique",)),
    Country("NA", "NAM", 264, "Namibia", ("Republic of Namibia",)),
    Country("NC", "NCL", 687, "New Caledonia", ()),
    Country("NE", "NER", 227, "Niger", ("Republic of the Niger",)),
    Country("NF", "NFK", 672, "Norfolk Island", ()),
    Country("NG", "NGA", 234, "Nigeria", ("Federal Republic of Nigeria",)),
    Country("NI", "NIC", 505, "Nicaragua", ("Republic of Nicaragua",)),
    Country(
        "NL", "NLD", 31, "Netherlands", ("Kingdom of the Netherlands", "Holland", "The Netherlands")
    ),
    Country("NO", "NOR", 47, "Norway", ("Kingdom of Norway",)),
    Country("NP", "NPL", 977, "Nepal", ("Federal Democratic Republic of Nepal",)),
    Country("NR", "NRU", 674, "Nauru", ("Republic of Nauru",)),
    Country("NU", "NIU", 683, "Niue", ()),
    Country("NZ", "NZL", 64, "New Zealand", ()),
    Country("OM", "OMN", 968, "Oman", ("Sultanate of Oman",)),
    Country("PA", "PAN", 507, "Panama", ("Republic of Panama",)),
    Country("PE", "PER", 51, "Peru", ("Republic of Peru",)),
    Country("PF", "PYF", 689, "French Polynesia", ()),
    Country("PG", "PNG", 675, "Papua New Guinea", ("Independent State of Papua New Guinea",)),
    Country("PH", "PHL", 63, "Philippines", ("Republic of the Philippines",)),
    Country("PK", "PAK", 92, "Pakistan", ("Islamic Republic of Pakistan",)),
    Country("PL", "POL", 48, "Poland", ("Republic of Poland",)),
    Country("PM", "SPM", 508, "Saint Pierre and Miquelon", ()),
    Country("PN", "PCN", None, "Pitcairn", ()),
    Country("PR", "PRI", 1, "Puerto Rico", ()),
    Country("PS", "PSE", 970, "Palestine", ("Palestine, State of", "the State of Palestine")),
    Country("PT", "PRT", 351, "Portugal", ("Portuguese Republic",)),
    Country("PW", "PLW", 680, "Palau", ("Republic of Palau",)),
    Country("PY", "PRY", 595, "Paraguay", ("Republic of Paraguay",)),
    Country("QA", "QAT", 974, "Qatar", ("State of Qatar",)),
    Country("RE", "REU", 262, "Réunion", ()),
    Country("RO", "ROU", 40, "Romania", ()),
    Country("RS", "SRB", 381, "Serbia", ("Republic of Serbia",)),
    Country("RU", "RUS", 7, "Russia", ("Russian Federation",)),
    Country("RW", "RWA", 250, "Rwanda", ("Rwandese Republic",)),
    Country("SA", "SAU", 966, "Saudi Arabia", ("Kingdom of Saudi Arabia",)),
    Country("SB", "SLB", 677, "Solomon Islands", ()),
    Country("SC", "SYC", 248, "Seychelles", ("Republic of Seychelles",)),
    Country("SD", "SDN", 249, "Sudan", ("Republic of the Sudan",)),
    Country("SE", "SWE", 46, "Sweden", ("Kingdom of Sweden",)),
    Country("SG", "SGP", 65, "Singapore", ("Republic of Singapore",)),
    Country("SH", "SHN", 290, "Saint Helena, Ascension and Tristan da Cunha", ()),
    Country("SI", "SVN", 386, "Slovenia", ("Republic of Slovenia",)),
    Country("SJ", "SJM", 47, "Svalbard and Jan Mayen", ()),
    Country("SK", "SVK", 421, "Slovakia", ("Slovak Republic",)),
    Country("SL", "SLE", 232, "Sierra Leone", ("Republic of Sierra Leone",)),
    Country("SM", "SMR", 378, "San Marino", ("Republic of San Marino",)),
    Country("SN", "SEN", 221, "Senegal", ("Republic of Senegal",)),
    Country("SO", "SOM", 252, "Somalia", ("Federal Republic of Somalia",)),
    Country("SR", "SUR", 597, "Suriname", ("Republic of Suriname",)),
    Country("SS", "SSD", 211, "South Sudan", ("Republic of South Sudan",)),
    Country(
        "ST", "STP", 239, "Sao Tome and Principe", ("Democratic Republic of Sao Tome and Principe",)
    ),
    Country("SV", "SLV", 503, "El Salvador", ("Republic of El Salvador",)),
    Country("SX", "SXM", 1, "Sint Maarten (Dutch part)", ()),
    Country("SY", "SYR", 963, "Syria", ("Syrian Arab Republic",)),
    Country("SZ", "SWZ", 268, "Eswatini", ("Kingdom of Eswatini", "Swaziland")),
    Country("TC", "TCA", 1, "Turks and Caicos Islands", ()),
    Country("TD", "TCD", 235, "Chad", ("Republic of Chad",)),
    Country("TF", "ATF", None, "French Southern Territories", ()),
    Country("TG", "TGO", 228, "Togo", ("Togolese Republic",)),
    Country("TH", "THA", 66, "Thailand", ("Kingdom of Thailand",)),
    Country("TJ", "TJK", 992, "Tajikistan", ("Republic of Tajikistan",)),
    Country("TK", "TKL", 690, "Tokelau", ()),
    Country("TL", "TLS", 670, "Timor-Leste", ("Democratic Republic of Timor-Leste",)),
    Country("TM", "TKM", 993, "Turkmenistan", ()),
    Country("TN", "TUN", 216, "Tunisia", ("Republic of Tunisia",)),
    Country("TO", "TON", 676, "Tonga", ("Kingdom of Tonga",)),
    Country("TR", "TUR", 90, "Türkiye", ("Republic of Türkiye", "Turkey", "Turkiye")),
    Country("TT", "TTO", 1, "Trinidad and Tobago", ("Republic of Trinidad and Tobago",)),
    Country("TV", "TUV", 688, "Tuvalu", ()),
    Country("TW", "TWN", 886, "Taiwan", ("Taiwan, Province of China",)),
    Country(
        "TZ",
        "TZA",
        255,
        "Tanzania",
        ("Tanzania, United Republic of", "United Republic of Tanzania"),
    ),
    Country("UA", "UKR", 380, "Ukraine", ()),
    Country("UG", "UGA", 256, "Uganda", ("Republic of Uganda",)),
    Country("UM", "UMI", None, "United States Minor Outlying Islands", ()),
    Country(
        "US",
        "USA",
        1,
        "United States",
        ("United States of America", "USA", "U.S.", "U.S.A.", "America"),
    ),
    Country("UY", "URY", 598, "Uruguay", ("Eastern Republic of Uruguay",)),
    Country("UZ", "UZB", 998, "Uzbekistan", ("Republic of Uzbekistan",)),
    Country("VA", "VAT", 39, "Holy See (Vatican City State)", ("Vatican", "Vatican City")),
    Country("VC", "VCT", 1, "Saint Vincent and the Grenadines", ()),
    Country(
        "VE",
        "VEN",
        58,
        "Venezuela",
        ("Venezuela, Bolivarian Republic of", "Bolivarian Republic of Venezuela"),
    ),
    Country("VG", "VGB", 1, "Virgin Islands, British", ("British Virgin Islands",)),
    Country("VI", "VIR", 1, "Virgin Islands, U.S.", ("Virgin Islands of the United States",)),
    Country("VN", "VNM", 84, "Vietnam", ("Viet Nam", "Socialist Republic of Viet Nam")),
    Country("VU", "VUT", 678, "Vanuatu", ("Republic of Vanuatu",)),
    Country("WF", "WLF", 681, "Wallis and Futuna", ()),
    Country("WS", "WSM", 685, "Samoa", ("Independent State of Samoa",)),
    Country("YE", "YEM", 967, "Yemen", ("Republic of Yemen",)),
    Country("YT", "MYT", 262, "Mayotte", ()),
    Country("ZA", "ZAF", 27, "South Africa", ("Republic of South Africa",)),
    Country("ZM", "ZMB", 260, "Zambia", ("Republic of Zambia",)),
    Country("ZW", "ZWE", 263, "Zimbabwe", ("Republic of Zimbabwe",)),
)


def normalise_country_key(value: str) -> str:
    """Fold case, accents, punctuation and spacing so that spellings of a name compare equal."""
    decomposed = unicodedata.normalize("NFKD", value)
    letters = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    cleaned = "".join(ch if ch.isalnum() else " " for ch in letters.casefold())
    words = cleaned.split()
    if words and words[0] == "the":
        words = words[1:]
    return " ".join(words)


def _build_index() -> dict[str, Country]:
    index: dict[str, Country] = {}
    for country in _COUNTRIES:
        for key in (country.name, *country.aliases):
            index.setdefault(normalise_country_key(key), country)
    for country in _COUNTRIES:  # codes win over names that happen to spell a code
        index[country.alpha3.casefold()] = country
    for country in _COUNTRIES:
        index[country.alpha2.casefold()] = country
    return index


COUNTRIES_BY_ALPHA2: dict[str, Country] = {country.alpha2: country for country in _COUNTRIES}
_INDEX: dict[str, Country] = _build_index()


def lookup_country(value: str) -> Country | None:
    """The country named by an alpha-2 or alpha-3 code, a name or an alias; None if unknown."""
    country = _INDEX.get(value.strip().casefold())
    if country is None:
        country = _INDEX.get(normalise_country_key(value))
    return country


def calling_code(alpha2: str) -> int | None:
    """The international calling code of a country given by its alpha-2 code (any case)."""
    country = COUNTRIES_BY_ALPHA2.get(alpha2.strip().upper())
    return None if country is None else country.calling_code
