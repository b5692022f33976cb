"""Keyword candidates of Chinese (and Japanese) text are words and short noun phrases, not
the clauses between punctuation marks (portrait.segmentation through candidate_phrases)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Sequence

import numpy as np
import pytest

from portrait.keywords import TextFeatureBatch, candidate_phrases
from portrait.segmentation import MAX_CHARS, script_runs
from tests.fakes import HashingEncoder

# Reviews of films, products, food and travel, each with the words a reader would pick as
# what it is about (written before looking at the candidates).
REVIEWS: list[tuple[str, set[str]]] = [
    ("这部电影的特效非常震撼，太空战斗场面宏大，我很喜欢科幻题材和星际冒险故事。",
     {"特效", "太空战斗", "科幻题材", "星际冒险"}),
    ("悬疑推理片，剧情反转不断，结局出人意料。", {"悬疑", "推理", "剧情", "结局"}),
    ("宫崎骏的动画电影画面唯美，配乐温暖，适合全家一起看。",
     {"宫崎骏", "动画电影", "画面", "配乐"}),
    ("这部纪录片讲述了非洲草原上狮子家族的生存故事，摄影技术一流，旁白也很专业。",
     {"纪录片", "非洲草原", "狮子", "摄影技术", "旁白"}),
    ("恐怖片不是我的菜，但这部的氛围营造和音效设计确实出色，吓得我不敢关灯。",
     {"恐怖片", "氛围", "音效设计"}),
    ("演员的演技在线，可惜剧本太拖沓，爱情线也很牵强。", {"演员", "演技", "剧本", "爱情线"}),
    ("这款蓝牙耳机降噪效果出色，佩戴舒适，续航能力强，通话音质也清楚。",
     {"蓝牙耳机", "降噪", "续航能力", "音质"}),
    ("手机屏幕很清晰，拍照效果一般，电池续航时间太短了。",
     {"手机屏幕", "拍照效果", "电池", "续航时间"}),
    ("这台笔记本电脑散热不好，玩游戏的时候风扇声音很大，键盘手感倒是不错。",
     {"笔记本电脑", "散热", "风扇", "键盘手感"}),
    ("买给孩子的乐高积木，零件做工精细，说明书清楚，拼好的城堡很漂亮。",
     {"乐高积木", "零件", "说明书", "城堡"}),
    ("扫地机器人的避障功能不错，吸力够大，就是水箱太小。",
     {"扫地机器人", "避障功能", "吸力", "水箱"}),
    ("这家餐厅的麻婆豆腐很正宗，水煮鱼也够辣，服务员态度热情，就是价格有点贵。",
     {"麻婆豆腐", "水煮鱼", "服务员", "价格"}),
    ("成都的火锅和串串香都很好吃，红油锅底又麻又辣。", {"成都", "火锅", "串串香", "锅底"}),
    ("早餐的小笼包皮薄汤多，豆浆很香，油条稍微有点硬。", {"小笼包", "豆浆", "油条"}),
    ("这家咖啡馆的拿铁奶香浓郁，抹茶蛋糕甜而不腻，环境安静适合看书。",
     {"咖啡馆", "拿铁", "抹茶蛋糕", "环境"}),
    ("丽江古城的夜景很美，纳西族的音乐让人难忘，客栈老板也很热情。",
     {"丽江古城", "夜景", "纳西族", "音乐", "客栈"}),
    ("在九寨沟看到了五彩池和瀑布，导游讲解得很用心。", {"九寨沟", "五彩池", "瀑布", "导游"}),
    ("西藏之旅：布达拉宫气势恢宏，高原反应有点难受，但雪山和湖泊的风景值得。",
     {"西藏", "布达拉宫", "高原反应", "雪山", "湖泊", "风景"}),
    ("金庸的武侠小说百看不厌，杨过和小龙女的爱情故事让人唏嘘。",
     {"金庸", "武侠小说", "小龙女", "爱情故事"}),
    ("我看了《Star Wars》之后爱上了科幻电影，尤其是光剑对决和宇宙飞船。",
     {"科幻电影", "光剑", "宇宙飞船", "star wars"}),
]
EXAMPLE = REVIEWS[0][0]
_LATIN = re.compile(r"[A-Za-z]")
FUNCTION_WORDS = {"的", "了", "我", "很", "和", "也", "是", "这部", "非常", "就是", "有点"}


@pytest.mark.parametrize(("text", "picks"), REVIEWS, ids=[f"review{i}" for i in range(20)])
def test_candidates_are_short_words_of_the_text(text: str, picks: set[str]) -> None:
    cands = candidate_phrases(text)
    assert cands
    for c in cands:
        assert c in text.lower(), c
        if not _LATIN.search(c):
            assert len(c) <= MAX_CHARS, c
    assert not FUNCTION_WORDS & set(cands)
    found = picks & set(cands)
    assert len(found) >= len(picks) / 2, (sorted(picks - found), cands)


def test_most_of_the_readers_picks_are_candidates() -> None:
    """jieba's dictionary misses some (拿铁 is cut 拿|铁奶, 宇宙飞船 is tagged an idiom);
    measured: 71 of the 82 picks."""
    found = sum(len(picks & set(candidate_phrases(text))) for text, picks in REVIEWS)
    total = sum(len(picks) for _, picks in REVIEWS)
    assert found >= 0.8 * total, f"{found} of {total}"


def test_example_review_gives_words_and_noun_pairs_not_clauses() -> None:
    cands = candidate_phrases(EXAMPLE)
    # 特效 is tagged an adjective by jieba's dictionary: it counts as the head after 的.
    assert {"特效", "太空战斗", "科幻题材", "星际冒险", "电影"} <= set(cands)
    assert "太空战斗场面宏大" not in cands and "这部电影的特效非常震撼" not in cands
    # Verbs and adjectives are not keywords.
    assert not {"喜欢", "震撼", "宏大"} & set(cands)


def test_degree_adverb_and_adjective_is_not_a_noun() -> None:
    """jieba lists 很漂亮 and 太短 as nouns; 太空 starts with the same adverb but is one."""
    cands = candidate_phrases("拼好的城堡很漂亮，电池续航时间太短了，我喜欢太空。")
    assert {"城堡", "续航时间", "太空"} <= set(cands)
    assert not [c for c in cands if "很漂亮" in c or "太短" in c]


def test_stop_nouns_are_dropped() -> None:
    cands = candidate_phrases("玩游戏的时候感觉东西很多，火锅很好吃。")
    assert "火锅" in cands
    assert not {"时候", "感觉", "东西"} & set(cands)


def test_repeated_words_rank_first() -> None:
    cands = candidate_phrases("周末去吃了火锅。这家的毛肚新鲜，火锅汤底也香，下次还来吃火锅。")
    assert cands[0] == "火锅"


def test_mixed_text_keeps_english_words_and_never_bridges_a_chinese_run() -> None:
    cands = candidate_phrases(
        "Inception 和 Interstellar 都是诺兰导演的科幻电影，配乐由 Hans Zimmer 创作。"
    )
    assert {"inception", "interstellar", "hans zimmer", "科幻电影", "配乐"} <= set(cands)
    # Words either side of Chinese text are not one phrase.
    assert "inception interstellar" not in cands and "interstellar hans" not in cands


def test_english_text_is_one_run_and_never_loads_the_dictionary() -> None:
    text = "The robots and the robots of the space opera, 1977."
    assert list(script_runs(text)) == [(text, False)]
    script = textwrap.dedent(
        """
        import sys
        from portrait.keywords import candidate_phrases
        print(candidate_phrases("The robots and the robots of the space opera"))
        assert "rjieba" not in sys.modules, "English text loaded the Chinese dictionary"
        candidate_phrases("科幻电影")
        assert "rjieba" in sys.modules
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "'space opera'" in out.stdout
    assert out.stderr == ""  # the dictionary loads silently


def test_script_runs_cut_where_cjk_starts_and_ends() -> None:
    runs = list(script_runs("iPhone 15 的钛金属边框，USB-C 接口"))
    assert runs == [("iPhone 15 ", False), ("的钛金属边框", True), ("，USB-C ", False),
                    ("接口", True)]


def test_japanese_cut_at_script_changes() -> None:
    cands = candidate_phrases("東京の夜景はとても美しい。ロボット映画が大好きです。")
    assert {"東京", "夜景", "ロボット", "ロボット映画"} <= set(cands)
    hiragana = re.compile("[\u3040-\u309f]")
    assert not [c for c in cands if hiragana.search(c)]
    assert "美" not in cands  # a lone kanji is an inflected stem here (美しい)


def test_first_load_from_many_threads_gives_the_sequential_result() -> None:
    """The dictionary loads in a fresh process while eight threads ask for candidates."""
    script = textwrap.dedent(
        """
        import json, sys
        from concurrent.futures import ThreadPoolExecutor
        from portrait.keywords import candidate_phrases
        texts = json.loads(sys.stdin.read())
        with ThreadPoolExecutor(8) as pool:
            threaded = list(pool.map(candidate_phrases, texts * 4))
        assert threaded == [candidate_phrases(t) for t in texts * 4]
        print("same")
        """
    )
    texts = [text for text, _ in REVIEWS[:8]]
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         input=json.dumps(texts))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "same"


class CharacterEncoder(HashingEncoder):
    """The hashing test encoder over characters: Chinese writes no spaces, so a bag of words
    would make each clause one token and no candidate would share anything with its text."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return super().encode([" ".join(t) for t in texts])


def test_top_keywords_through_the_batch_are_words_of_the_text() -> None:
    texts = [text for text, _ in REVIEWS]
    batch = TextFeatureBatch(texts)
    feats = batch.assemble(CharacterEncoder(dim=256).encode(batch.inputs), "chars")
    for text, feat in zip(texts, feats, strict=True):
        words = [k for k, _ in feat.keywords]
        assert 3 <= len(words) <= 5, (text, words)
        for w in words:
            assert w in text.lower(), (text, w)
            assert _LATIN.search(w) or len(w) <= MAX_CHARS, (text, w)
