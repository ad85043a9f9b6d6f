# The benchmarks the job files know: languages, directions and the language
# groups the results are averaged over. Sourced by jobs/run_*.sh.
#
# dataset_define NAME sets
#   EN           the pivot language (every direction is EN->xx or xx->EN)
#   LANGS        every language, in the order of the reference's --langs (this
#                order fixes the ids of the __xx__ tokens in a fairseq dictionary)
#   XX           the non-English languages, in the order of the paper's tables
#   LANG_GROUPS  "name:lang,lang;name:..." averaged in the summary besides "all"
#                (not GROUPS: bash ignores assignments to its own GROUPS)
#   TEST_LAYOUT  retrieved (m15.zip's retrieved_data/test.EN-xx.{EN,xx}) or
#                tsv (test.en-xx.tsv: English<TAB>xx)

dataset_define() {
  case $1 in
    m4)  # paper Table 1 (smoe_spec.md section 4): 8 directions
      EN=eng
      LANGS=nso,msa,tgl,cat,eng
      XX=nso,msa,tgl,cat
      LANG_GROUPS=""
      TEST_LAYOUT=retrieved ;;
    m15)  # paper Table 2: 30 directions; groups of get_m15_mean.py
      EN=eng
      LANGS=nso,run,ssw,ind,msa,isl,nob,fao,slv,tgl,cat,glg,fur,ltz,lim,eng
      XX=ind,msa,isl,slv,tgl,nso,run,nob,cat,glg,ssw,fao,fur,ltz,lim
      LANG_GROUPS="high:ind,msa,isl,slv,tgl;low:nso,run,nob,cat,glg;very-low:ssw,fao,fur,ltz,lim"
      TEST_LAYOUT=retrieved ;;
    lo4)  # LibreOffice help, 4 languages as the CPU demo (docs/data.md)
      EN=en
      LANGS=en,de,fr,it,nl
      XX=de,fr,it,nl
      LANG_GROUPS=""
      TEST_LAYOUT=tsv ;;
    lo15)  # LibreOffice help, 15 languages in three tiers like M15 (docs/reproduce.md):
      # high ~28k training pairs each, low ~14k (their natural sizes), very low
      # subsampled to VERYLOW_PAIRS (default 2000)
      EN=en
      LANGS=en,de,fr,it,nl,el,ja,ko,sv,gl,km,hi,vi,tr,fi,et
      XX=de,fr,it,nl,el,ja,ko,sv,gl,km,hi,vi,tr,fi,et
      LANG_GROUPS="high:de,fr,it,nl,el;low:ja,ko,sv,gl,km;very-low:hi,vi,tr,fi,et"
      TEST_LAYOUT=tsv ;;
    *) die "unknown dataset '$1' (m4, m15, lo4, lo15)" ;;
  esac
}

# LANG_PAIRS: xx-EN for every xx, then EN-xx (the reference's order).
dataset_pairs() {
  local out="" x
  for x in ${XX//,/ }; do out+="$x-$EN,"; done
  for x in ${XX//,/ }; do out+="$EN-$x,"; done
  LANG_PAIRS=${out%,}
}

# group_of LANG: the name of LANG's group in LANG_GROUPS ("high", ...), or "" when none.
group_of() {
  local g members
  for g in ${LANG_GROUPS//;/ }; do
    members=${g#*:}
    if [[ ",$members," == *",$1,"* ]]; then printf '%s\n' "${g%%:*}"; return; fi
  done
  printf '\n'
}
