#!/usr/bin/env bash
# tests/fuzz/make_corpus.sh — writes the seed corpus of every fuzz harness into
# tests/fuzz/corpus/NAME/ (small valid and near-valid files; the files are committed, this is how
# they were made). Real checkpoints, states, shards and tokenizers come from the program itself
# at tiny sizes; the near-valid ones are those with one thing broken (python3 patches them).
# Names: ok_* must be accepted and bad_* rejected by the harness (replay.c checks both).
# Run from anywhere after `make sirt tests/test_core`; overwrites the corpus directories.
set -eu
cd "$(dirname "$0")/../.."
root=$PWD
out=tests/fuzz/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1
rm -rf "$out"
mkdir -p "$out"/{jsonl,tokenizer,gpt2,checkpoint,shard,state,answer}

# patch FILE OFFSET INT32...: overwrites little-endian int32 values at a byte offset
patch() {
    python3 - "$@" <<'EOF'
import struct, sys
path, offset = sys.argv[1], int(sys.argv[2])
data = bytearray(open(path, 'rb').read())
for i, v in enumerate(sys.argv[3:]):
    data[offset + 4 * i: offset + 4 * i + 4] = struct.pack('<I', int(v, 0) & 0xFFFFFFFF)
open(path, 'wb').write(data)
EOF
}

# ---- checkpoints: ./sirt train at two tiny shapes
tests/test_core --write-shard "$tmp/s128.bin" 200 128 1
./sirt train --config 1,1,1,2,128 --data "$tmp/s128.bin" --batch 1 --seq 2 --steps 2 --lr 1e-2 \
    --out "$tmp/a.bin" >/dev/null
./sirt train --config 1,1,1,2,128 --data "$tmp/s128.bin" --batch 1 --seq 2 --steps 2 --lr 1e-2 \
    --seed 2 --out "$tmp/b.bin" >/dev/null
tests/test_core --write-shard "$tmp/s100.bin" 200 100 1
./sirt train --config 2,2,2,4,100 --data "$tmp/s100.bin" --batch 1 --seq 4 --steps 1 --lr 1e-2 \
    --out "$tmp/c.bin" >/dev/null
c=$out/checkpoint
cp "$tmp/a.bin" $c/ok_1layer_C1_V128.bin
cp "$tmp/c.bin" $c/ok_2layers_2heads_V100.bin
head -c 1300 "$tmp/a.bin" >$c/bad_truncated.bin
head -c 100 "$tmp/a.bin" >$c/bad_truncated_header.bin
{ cat "$tmp/a.bin"; printf 'x'; } >$c/bad_extra_byte.bin
cp "$tmp/a.bin" $c/bad_magic.bin; patch $c/bad_magic.bin 0 20240520
cp "$tmp/a.bin" $c/bad_version5_bf16.bin; patch $c/bad_version5_bf16.bin 4 5
cp "$tmp/a.bin" $c/bad_version7.bin; patch $c/bad_version7.bin 4 7
cp "$tmp/a.bin" $c/bad_2pow31_layers.bin; patch $c/bad_2pow31_layers.bin 16 0x7fffffff
cp "$tmp/a.bin" $c/bad_negative_layers.bin; patch $c/bad_negative_layers.bin 16 -1
cp "$tmp/a.bin" $c/bad_C_2pow30.bin; patch $c/bad_C_2pow30.bin 24 0x40000000
cp "$tmp/a.bin" $c/bad_C_not_multiple_of_NH.bin; patch $c/bad_C_not_multiple_of_NH.bin 20 2 3
cp "$tmp/a.bin" $c/bad_Vp_below_V.bin; patch $c/bad_Vp_below_V.bin 28 64
cp "$tmp/a.bin" $c/bad_V_huge.bin; patch $c/bad_V_huge.bin 12 0x7fffff00; patch $c/bad_V_huge.bin 28 0x7fffffff
cp "$tmp/a.bin" $c/bad_maxT_zero.bin; patch $c/bad_maxT_zero.bin 8 0

# ---- training states: checkpoint, marker, state (fuzz_state.c)
s=$out/state
marker=$'\nSIRT-STATE\n'
{ cat "$tmp/a.bin"; printf '%s' "$marker"; cat "$tmp/a.bin.state"; } >$s/ok_state.bin
{ cat "$tmp/a.bin"; printf '%s' "$marker"; cat "$tmp/b.bin.state"; } >$s/bad_state_of_another_checkpoint.bin
{ cat "$tmp/a.bin"; printf '%s' "$marker"; head -c 2000 "$tmp/a.bin.state"; } >$s/bad_truncated_state.bin
{ cat "$tmp/a.bin"; printf '%s' "$marker"; head -c 500 "$tmp/a.bin.state"; } >$s/bad_truncated_header.bin
{ cat "$tmp/a.bin"; cat "$tmp/a.bin.state"; } >$s/bad_no_marker.bin
{ head -c 1200 "$tmp/a.bin"; printf '%s' "$marker"; cat "$tmp/a.bin.state"; } >$s/bad_truncated_checkpoint.bin
for case in "magic 0 20240526" "version 4 2" "count 20 999 0" "count_2pow63 20 0 0x80000000" "negative_step 8 -5" "nan_best_loss 56 0x7fc00000" "skipped_more_than_steps 60 1000000" "streak_more_than_skipped 64 3"; do
    set -- $case
    f=$s/bad_$1.bin
    cp $s/ok_state.bin "$f"
    shift
    offset=$(( $(stat -c %s "$tmp/a.bin") + ${#marker} + $1 ))
    shift
    patch "$f" $offset "$@"
done

# ---- token shards (fuzz_shard.c reads them for a vocabulary of 1000)
d=$out/shard
tests/test_core --write-shard $d/ok_50_tokens.bin 50 1000 1
tests/test_core --write-cyclic-shard $d/ok_cyclic_20_tokens.bin 20 7
tests/test_core --write-shard $d/ok_0_tokens.bin 0 1000 1
tests/test_core --write-shard $d/ok_5_tokens_no_batch.bin 5 1000 1
tests/test_core --write-shard $d/bad_token_outside_vocabulary.bin 30 65535 3
head -c 1050 $d/ok_50_tokens.bin >$d/bad_truncated.bin
head -c 600 $d/ok_50_tokens.bin >$d/bad_truncated_header.bin
{ cat $d/ok_50_tokens.bin; printf 'x'; } >$d/bad_odd_extra_byte.bin
cp $d/ok_50_tokens.bin $d/bad_negative_count.bin; patch $d/bad_negative_count.bin 8 -50
cp $d/ok_50_tokens.bin $d/bad_count_2pow31.bin; patch $d/bad_count_2pow31.bin 8 0x7fffffff
cp $d/ok_50_tokens.bin $d/bad_magic.bin; patch $d/bad_magic.bin 0 20240326
cp $d/ok_50_tokens.bin $d/bad_version2.bin; patch $d/bad_version2.bin 4 2

# ---- our tokenizer files
t=$out/tokenizer
printf 'Tom has 3 apples. He buys 5 more: 3 + 5 = 8.\nThe answer is 8.\n' >"$tmp/text.txt"
./sirt tokenizer --train "$tmp/text.txt" --vocab 300 --out $t/ok_300_tokens.bin --llmc-out "$tmp/llmc.bin" >/dev/null
./sirt tokenizer --train "$tmp/text.txt" --vocab 290 --split-digits --out $t/ok_split_digits.bin >/dev/null
./sirt tokenizer --train "$tmp/text.txt" --vocab 257 --out $t/ok_no_merges.bin >/dev/null
head -c 100 $t/ok_300_tokens.bin >$t/bad_truncated.bin
head -c 10 $t/ok_300_tokens.bin >$t/bad_truncated_header.bin
{ cat $t/ok_300_tokens.bin; printf 'xxxxxxxx'; } >$t/bad_extra_merge_bytes.bin
head -c 1100 "$tmp/llmc.bin" >$t/bad_llmc_decode_table.bin
cp $t/ok_300_tokens.bin $t/bad_magic.bin; patch $t/bad_magic.bin 0 0x12345678
cp $t/ok_300_tokens.bin $t/bad_version2.bin; patch $t/bad_version2.bin 4 2
cp $t/ok_300_tokens.bin $t/bad_vocab_size.bin; patch $t/bad_vocab_size.bin 8 301
cp $t/ok_300_tokens.bin $t/bad_merges_2pow31.bin; patch $t/bad_merges_2pow31.bin 8 0x7fffffff 0x7ffffffe 0x7ffffffe
cp $t/ok_300_tokens.bin $t/bad_merge_uses_later_token.bin; patch $t/bad_merge_uses_later_token.bin 20 300
cp $t/ok_300_tokens.bin $t/bad_merge_repeated.bin; python3 - $t/bad_merge_repeated.bin <<'EOF'
import sys
p = sys.argv[1]; d = bytearray(open(p, 'rb').read())
d[28:36] = d[20:28]  # merge 1 = merge 0
open(p, 'wb').write(d)
EOF
python3 - $t <<'EOF'
import struct, sys
# 9 merges each doubling "a": token 256+k has 2^(k+1) bytes; the 8th (256 bytes) is too long
n = 9
pairs = [(97, 97)] + [(256 + k, 256 + k) for k in range(n - 1)]
data = struct.pack('<5I', 0x45504253, 1, n + 257, n + 256, n) + b''.join(struct.pack('<2I', *p) for p in pairs)
open(sys.argv[1] + '/bad_token_longer_than_255_bytes.bin', 'wb').write(data)
EOF

# ---- GPT-2's encoder.json + NUL + vocab.bpe, a miniature with GPT-2's byte characters
python3 - $out/gpt2 <<'EOF'
import json, sys
d = sys.argv[1]
bs = list(range(ord('!'), ord('~') + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
cs = bs[:]
n = 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
char = {b: chr(c) for b, c in zip(bs, cs)}
tokens = [char[b] for b in bs]  # GPT-2's ids 0..255 follow this order
merges = [('Ġ', 't'), ('h', 'e'), ('Ġt', 'he'), ('a', 'n'), ('Ġ', 'a'), ('Ġa', 'n')]
vocab = tokens + [l + r for l, r in merges] + ['<|endoftext|>']
def write(name, vocab, merges, header='#version: 0.2\n'):
    enc = json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False)
    bpe = header + ''.join(f'{l} {r}\n' for l, r in merges)
    open(f'{d}/{name}', 'wb').write(enc.encode() + b'\0' + bpe.encode())
write('ok_mini.bin', vocab, merges)
write('ok_no_merges.bin', tokens + ['<|endoftext|>'], [], header='')
write('bad_no_endoftext.bin', vocab[:-1], merges)
write('bad_merge_not_in_encoder.bin', vocab, merges + [('x', 'y')])
write('bad_merged_token_missing.bin', [t for t in vocab if t != 'Ġthe'], merges)
write('bad_missing_byte.bin', vocab[1:], merges)
write('bad_merge_uses_later_token.bin', vocab, [merges[2]] + merges)
enc = json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False)
open(f'{d}/bad_duplicate_id.bin', 'wb').write(enc.replace('"<|endoftext|>": %d' % (len(vocab) - 1), '"<|endoftext|>": 5').encode() + b'\0')
open(f'{d}/bad_id_out_of_range.bin', 'wb').write(enc.replace('"<|endoftext|>": %d' % (len(vocab) - 1), '"<|endoftext|>": 9999').encode() + b'\0')
open(f'{d}/bad_truncated_json.bin', 'wb').write(enc[:len(enc) // 2].encode() + b'\0')
open(f'{d}/bad_not_a_byte_character.bin', 'wb').write(enc.replace('"!": 0', '"\\u4e00": 0').encode() + b'\0')
open(f'{d}/bad_merge_line.bin', 'wb').write(enc.encode() + b'\0#version: 0.2\nh e x\n')
EOF

# ---- JSON lines and examples
j=$out/jsonl
./sirt data --task math --split train --n 2 --seed 1 --noise 0.5 --out $j/ok_task_math.jsonl
./sirt data --task choice --split test-ood --n 1 --seed 1 --out $j/ok_task_choice.jsonl
[ -f ../shared/data/gsm8k/train.jsonl ] && head -1 ../shared/data/gsm8k/train.jsonl >$j/ok_gsm8k.jsonl
printf '\xef\xbb\xbf{"prompt": "caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\\\ \\/ \\b\\f\\n\\r\\t", "completion": " ok\xc3\xa9", "n": -1.5e+3}\r\n\r\n  \t\n{"prompt": "", "completion": "x", "extra": {"a": [1, true, false, null, {"b": []}]}}\n' >$j/ok_prompt_completion.jsonl
printf '{"text": "just text"}\n{"question": "Tom has 1,000 apples?", "answer": "He has <<1000+80=1080>>1080.\\n#### 1,080", "gold": "+1,080"}\n{"question": "q", "answer": "####  B "}\n' >$j/ok_text_and_question.jsonl
printf '{"prompt": "a", "completion": "b"}\n{"prompt": oops}\n' >$j/bad_line2_syntax.jsonl
printf '{"prompt": "a\\ud800", "completion": "b"}\n' >$j/bad_lone_surrogate.jsonl
printf '{"prompt": "a\\udc00", "completion": "b"}\n' >$j/bad_lone_low_surrogate.jsonl
printf '{"prompt": "a\\u0000", "completion": "b"}\n' >$j/bad_u0000.jsonl
printf '{"prompt": "a\x01", "completion": "b"}\n' >$j/bad_control_character.jsonl
printf '{"prompt": "a", "completion": "b"} x\n' >$j/bad_trailing_characters.jsonl
printf '{"prompt": "a", "completion": 01}\n' >$j/bad_leading_zero.jsonl
printf '{"prompt": "a", "completion": "b\n' >$j/bad_unterminated_string.jsonl
printf '{"prompt": "a"}\n' >$j/bad_missing_completion.jsonl
printf '{"prompt": 3, "completion": "b"}\n' >$j/bad_prompt_not_a_string.jsonl
printf '{"question": "q", "answer": "no final line"}\n' >$j/bad_no_final_answer.jsonl
printf '{"question": "q", "answer": "step\\n####   "}\n' >$j/bad_nothing_after_marks.jsonl
printf '{"foo": "bar"}\n' >$j/bad_no_known_fields.jsonl
# TRL's stepwise line (label-steps' output): arrays of strings, booleans and numbers; not an example
printf '%s\n' '{"prompt": "Q\n", "completions": ["a, b", "c]"], "labels": [true, false], "soft": [0.5, 0], "nested": [[1, {"k": "]"}], null]}' >$j/bad_stepwise_no_completion.jsonl
printf '[1, 2]\n' >$j/bad_not_an_object.jsonl
printf '\n \n' >$j/bad_no_examples.jsonl
python3 -c "print('{\"x\": ' + '[' * 70 + ']' * 70 + '}')" >$j/bad_nesting_70_deep.jsonl

# ---- completions for the answer checker
a=$out/answer
printf 'Tom has 3 apples.\nHe buys 5 more: 3 + 5 = 8.\nThe answer is 8.' >$a/ok_steps.txt
printf 'So the answer is: option (b)<|endoftext|>The answer is 3.' >$a/ok_choice_and_eot.txt
printf 'He pays $1,080.50 in all.\n#### $1,080.50' >$a/ok_gsm8k_marks.txt
printf 'The answer is -3.00 dollars. Wait, the answer is .5' >$a/ok_last_wins.txt
printf '12 / 5 = 2.\n2 x 3 = 6.\n-4 - -4 = 0.\nThe answer is -0.' >$a/ok_wrong_steps.txt
printf 'The answer is therefore 3' >$a/bad_no_number_after.txt
printf 'the answer isn'"'"'t 5' >$a/bad_not_whole_words.txt
printf 'The answer is 3 + 5 = 8' >$a/bad_expression.txt
printf 'The answer is 1234567890123456789012345678901234567890123456789012345678901234567890' >$a/bad_too_long.txt
printf '#### \n' >$a/bad_empty_marks.txt
printf 'The answer is 12th' >$a/bad_glued_letters.txt
[ -f ../shared/data/gsm8k/train.jsonl ] &&
    python3 -c "import json; print(json.loads(open('../shared/data/gsm8k/train.jsonl').readline())['answer'], end='')" >$a/ok_gsm8k_answer.txt

du -sh "$out"/* | sed "s|$root/||"
